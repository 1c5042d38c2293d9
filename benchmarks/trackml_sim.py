"""Validation of the fast TrackML simulator against real data, and its speed.

Writes ``benchmarks/results_trackml_sim.md`` and ``benchmarks/figures/trackml_sim_*.png``:

1. geometry and field (deterministic): ``--as-is --ideal`` on the real sample event's own
   particles; for every real hit the nearest simulated hit of the same particle on the
   same (volume, layer), median 3-D distance (to the real truth position) per volume,
   beside the same figure for a uniform 2 T helix from the particle's vertex taken where
   it crosses the hit's layer surface (radius in barrels, z in endcaps);
2. scattering in distribution: the angle between the truth momentum directions at
   consecutive hits of a particle, after removing the transverse bending the measured
   field explains, per volume group, simulated (full physics, as-is) against real; the
   x/X0 that would make each volume's median match (the calibration of
   ``trackml_transport.X_OVER_X0``) and the transverse field re-measured from the sample
   (``trackml_field.APPARENT_BZ_T``);
3. hits per particle: as-is on the real particle table of event 1000 against its nhits;
4. a default full event against the real sample's statistics (noise share, hits per
   particle, double hits per volume group);
5. speed: a default full event on one thread (OMP_NUM_THREADS=1), CLI start-up time.

Needs ``../shared/data`` (the real sample). Run from the repository root::

    .venv/bin/python benchmarks/trackml_sim.py [--repeats 3] \
        [--out benchmarks/results_trackml_sim.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one-core timings

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from data_processing import trackml_geometry as geo
from data_processing.trackml_field import APPARENT_BZ_T, APPARENT_Z_KNOTS_MM, C_LIGHT
from data_processing.trackml_sim import SimConfig, read_particles, simulate_event
from data_processing.trackml_transport import X_OVER_X0

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
GROUPS = {"pixel": (7, 8, 9), "short strip": (12, 13, 14), "long strip": (16, 17, 18)}
#: SPEC section 9: median distance of a uniform 2 T helix to the real hits, per volume.
SPEC_UNIFORM = {8: 0.19, 7: 0.19, 9: 0.23, 13: 2.9, 17: 7.0, 12: 6.1, 14: 9.3, 16: 20.7, 18: 33.9}
STRIP_ENDCAPS = (12, 14, 16, 18)


@dataclass(frozen=True)
class BenchConfig:
    sample_prefix: str = str(SHARED / "trackml_sample" / "event000000001")
    table_1000: str = str(SHARED / "trackml" / "event000001000-particles.csv")
    out: str = str(REPO_ROOT / "benchmarks" / "results_trackml_sim.md")
    figures: str = str(REPO_ROOT / "benchmarks" / "figures")
    seed: int = 0
    repeats: int = 3


def read_real(prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real hits merged with truth [n rows] and the particles of the sample event."""
    hits = pd.read_csv(f"{prefix}-hits.csv.gz")
    truth = pd.read_csv(f"{prefix}-truth.csv.gz")
    particles = pd.read_csv(f"{prefix}-particles.csv.gz")
    return hits.merge(truth, on="hit_id"), particles


def merged(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return frames["hits"].merge(frames["truth"], on="hit_id")


def nearest_partner(real: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    """Per real signal hit: distance (mm) to the nearest sim hit of the same particle and
    (volume, layer), NaN when there is none. Columns hit_id, volume_id, d."""
    real = real[real["particle_id"] != 0]
    keys = ["particle_id", "volume_id", "layer_id"]
    sim = sim[sim["particle_id"] != 0][[*keys, "tx", "ty", "tz"]].rename(
        columns={"tx": "sx", "ty": "sy", "tz": "sz"}
    )
    pairs = real[["hit_id", "tx", "ty", "tz", *keys]].merge(sim, on=keys, how="left")
    pairs["d"] = np.sqrt(
        (pairs.tx - pairs.sx) ** 2 + (pairs.ty - pairs.sy) ** 2 + (pairs.tz - pairs.sz) ** 2
    )
    return (
        pairs.groupby("hit_id").agg(volume_id=("volume_id", "first"), d=("d", "min")).reset_index()
    )


def uniform_helix_distance(
    real: pd.DataFrame, particles: pd.DataFrame, tesla: float = 2.0
) -> pd.Series:
    """Distance (mm) of each real signal hit to a uniform-field helix from its particle's
    vertex, taken at the hit's radius (barrels, first crossing) or z (endcaps)."""
    hits = real[real["particle_id"] != 0].merge(particles, on="particle_id")
    pt = np.hypot(hits.px, hits.py).to_numpy()
    radius = pt / (C_LIGHT * tesla)
    sense = -np.sign(hits.q.to_numpy())  # positive charges turn clockwise seen from +z
    phi0 = np.arctan2(hits.py, hits.px).to_numpy()
    vx, vy, vz = hits.vx.to_numpy(), hits.vy.to_numpy(), hits.vz.to_numpy()

    def point(alpha: np.ndarray) -> np.ndarray:
        a = alpha if alpha.ndim == 2 else alpha[:, None]
        phi = phi0[:, None] + sense[:, None] * a
        x = vx[:, None] + radius[:, None] * sense[:, None] * (np.sin(phi) - np.sin(phi0)[:, None])
        y = vy[:, None] + radius[:, None] * sense[:, None] * (np.cos(phi0)[:, None] - np.cos(phi))
        z = vz[:, None] + radius[:, None] * a * (hits.pz.to_numpy() / pt)[:, None]
        return np.stack([x, y, z], axis=-1)

    barrel = hits.volume_id.isin(geo.BARREL_VOLUMES).to_numpy()
    alpha = (hits.tz.to_numpy() - vz) * pt / (radius * hits.pz.to_numpy())
    grid = np.linspace(0.0, 2 * np.pi, 4001)[None, :]
    r_grid = np.hypot(
        *point(np.broadcast_to(grid, (len(hits), grid.shape[1])))[..., :2].transpose(2, 0, 1)
    )
    excess = r_grid - np.hypot(hits.tx, hits.ty).to_numpy()[:, None]
    change = np.argmax((excess[:, :-1] < 0) & (excess[:, 1:] >= 0), axis=1)
    found = (excess[np.arange(len(hits)), change] < 0) & (
        excess[np.arange(len(hits)), change + 1] >= 0
    )
    e0, e1 = excess[np.arange(len(hits)), change], excess[np.arange(len(hits)), change + 1]
    a_barrel = grid[0, change] + (grid[0, 1] - grid[0, 0]) * e0 / np.where(e1 != e0, e0 - e1, 1.0)
    alpha = np.where(barrel, np.where(found, a_barrel, np.nan), np.where(alpha >= 0, alpha, np.nan))
    where = point(alpha[:, None])[:, 0, :]
    d = np.linalg.norm(where - hits[["tx", "ty", "tz"]].to_numpy(), axis=1)
    return pd.Series(d, index=hits.hit_id.to_numpy())


def consecutive_hit_pairs(
    frame: pd.DataFrame, particles: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Consecutive hits of each particle (ordered by abs(tz - vz)) as two aligned frames,
    the first and the second hit of every pair, with the particle's ``vz`` and ``q``."""
    h = frame[frame["particle_id"] != 0].merge(
        particles[["particle_id", "vz", "q"]], on="particle_id"
    )
    h = (
        h.assign(order=np.abs(h.tz - h.vz))
        .sort_values(["particle_id", "order"])
        .reset_index(drop=True)
    )
    a, b = h.iloc[:-1].reset_index(drop=True), h.iloc[1:].reset_index(drop=True)
    same = a.particle_id.to_numpy() == b.particle_id.to_numpy()
    a, b = a[same].reset_index(drop=True), b[same].reset_index(drop=True)
    return a, b


def scattering_angles(frame: pd.DataFrame, particles: pd.DataFrame) -> pd.DataFrame:
    """Per pair of consecutive hits of a particle (ordered by abs(tz - vz)): the space angle
    (rad) between the truth momentum directions after removing the transverse rotation
    the measured apparent field A(abs z) explains, the first hit's volume and module."""
    a, b = consecutive_hit_pairs(frame, particles)
    pa, pb = a[["tpx", "tpy", "tpz"]].to_numpy(), b[["tpx", "tpy", "tpz"]].to_numpy()
    pt_a, pt_b = np.hypot(pa[:, 0], pa[:, 1]), np.hypot(pb[:, 0], pb[:, 1])
    theta_a, theta_b = np.arctan2(pt_a, pa[:, 2]), np.arctan2(pt_b, pb[:, 2])
    dphi = np.angle(np.exp(1j * (np.arctan2(pb[:, 1], pb[:, 0]) - np.arctan2(pa[:, 1], pa[:, 0]))))
    chord = np.hypot(b.tx - a.tx, b.ty - a.ty).to_numpy()
    z_mid = 0.5 * np.abs(a.tz.to_numpy() + b.tz.to_numpy())
    apparent = np.interp(z_mid, APPARENT_Z_KNOTS_MM, APPARENT_BZ_T)
    expected = -C_LIGHT * a.q.to_numpy() * apparent * chord / (0.5 * (pt_a + pt_b))
    residual = np.angle(np.exp(1j * (dphi - expected)))
    angle = np.hypot(theta_b - theta_a, np.sin(theta_a) * residual)
    p = np.linalg.norm(pa, axis=1)
    return pd.DataFrame({"angle": angle, "volume_id": a.volume_id.to_numpy(), "p": p, "pt": pt_a})


def apparent_field(frame: pd.DataFrame, particles: pd.DataFrame) -> pd.Series:
    """Median transverse bending of consecutive-hit pairs as a field (T), per 250 mm abs(z)."""
    a, b = consecutive_hit_pairs(frame, particles)
    pt = 0.5 * (np.hypot(a.tpx, a.tpy) + np.hypot(b.tpx, b.tpy))
    dphi = np.angle(np.exp(1j * (np.arctan2(b.tpy, b.tpx) - np.arctan2(a.tpy, a.tpx))))
    chord = np.hypot(b.tx - a.tx, b.ty - a.ty)
    field = -dphi * pt / (C_LIGHT * a.q * chord)
    z = 0.5 * np.abs(a.tz + b.tz)
    keep = (chord > 20) & (chord < 300) & (np.hypot(a.tpx, a.tpy) > 0.3)
    bins = pd.cut(z[keep], np.arange(0, 3001, 250))
    return field[keep].groupby(bins, observed=False).median()


def double_hit_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Share of (particle, volume, layer) pairs with two or more hits, per volume group."""
    sig = frame[frame["particle_id"] != 0]
    counts = sig.groupby(["particle_id", "volume_id", "layer_id"]).size().reset_index(name="n")
    return {g: float((counts.n[counts.volume_id.isin(v)] > 1).mean()) for g, v in GROUPS.items()}


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _section_geometry(det, real, sample_particles, base, figures) -> list[str]:
    lines: list[str] = []
    ideal = merged(simulate_event(sample_particles, base.ideal(), 1, det))
    bz_only = merged(
        simulate_event(sample_particles, replace(base.ideal(), radial_field=False), 1, det)
    )
    near = nearest_partner(real, ideal)
    near_bz = nearest_partner(real, bz_only)
    helix = uniform_helix_distance(real, sample_particles)
    near["uniform"] = helix.reindex(near.hit_id).to_numpy()
    near["bz_only"] = near_bz.set_index("hit_id").d.reindex(near.hit_id).to_numpy()
    lines += ["## 1. Geometry and field (as-is, ideal, real sample particles)", ""]
    lines += [
        "Median 3-D distance (mm) from each real hit (truth position) to the nearest simulated hit "
        "of the same particle on the same layer. Target: no volume worse than the uniform "
        "2 T helix "
        "(5 % slack); strip endcaps pooled at most 0.7x the helix; at most 15 % of real hits "
        "without a simulated partner.",
        "",
        _row(
            [
                "volume",
                "real hits",
                "uniform 2 T helix (SPEC)",
                "uniform 2 T helix (here)",
                "sim, Bz only",
                "sim (solenoid + Br)",
                "sim / helix",
                "no partner",
                "target met",
            ]
        ),
        _row(["---"] * 9),
    ]
    for vol in (8, 7, 9, 13, 17, 12, 14, 16, 18):
        sel = near[near.volume_id == vol]
        sim_med, uni_med = sel.d.median(), sel.uniform.median()
        lines.append(
            _row(
                [
                    vol,
                    len(sel),
                    SPEC_UNIFORM[vol],
                    f"{uni_med:.2f}",
                    f"{sel.bz_only.median():.2f}",
                    f"{sim_med:.2f}",
                    f"{sim_med / uni_med:.2f}",
                    f"{sel.d.isna().mean():.1%}",
                    "yes" if sim_med <= 1.05 * uni_med else "NO",
                ]
            )
        )
    se = near[near.volume_id.isin(STRIP_ENDCAPS)]
    pooled_ratio = se.d.median() / se.uniform.median()
    lines.append(
        _row(
            [
                "strip endcaps pooled",
                len(se),
                10.1,
                f"{se.uniform.median():.2f}",
                f"{se.bz_only.median():.2f}",
                f"{se.d.median():.2f}",
                f"{pooled_ratio:.2f}",
                f"{se.d.isna().mean():.1%}",
                "yes" if pooled_ratio <= 0.7 else "NO",
            ]
        )
    )
    missing = near.d.isna().mean()
    lines.append(
        _row(
            [
                "all",
                len(near),
                "",
                f"{near.uniform.median():.2f}",
                f"{near.bz_only.median():.2f}",
                f"{near.d.median():.2f}",
                "",
                f"{missing:.1%}",
                "yes" if missing <= 0.15 else "NO",
            ]
        )
    )
    lines += [
        "",
        f"Simulated hits (ideal): {int((ideal.particle_id != 0).sum())}; real signal hits: "
        f"{int((real.particle_id != 0).sum())} (the ideal run has no inefficiency).",
        "",
    ]
    measured = apparent_field(real, sample_particles)
    lines += [
        "Apparent transverse field re-measured from the sample (T, median per 250 mm of abs(z)) "
        "against the constants in `trackml_field.APPARENT_BZ_T`:",
        "",
        _row(["abs z bin (mm)"] + [str(b) for b in measured.index]),
        _row(["---"] * (len(measured) + 1)),
        _row(["measured"] + [f"{v:.3f}" for v in measured.values]),
        _row(["in the code"] + [f"{v:.3f}" for v in APPARENT_BZ_T]),
        "",
    ]
    _figure_tracks(real, ideal, figures / "trackml_sim_tracks.png")
    _figure_residuals(near, figures / "trackml_sim_residuals.png")

    return lines


def _section_scattering(det, real, sample_particles, base, figures) -> list[str]:
    lines: list[str] = []
    full = merged(simulate_event(sample_particles, base, 1, det))
    angle_real = scattering_angles(real, sample_particles)
    angle_sim = scattering_angles(full, sample_particles)
    lines += [
        "## 2. Multiple scattering (as-is, full physics, real sample particles)",
        "",
        "Space angle between the truth momentum directions at consecutive hits, after removing "
        "the transverse bending the measured field explains, by the first hit's volume group. "
        "Target: medians within 25 %.",
        "",
        _row(
            [
                "group",
                "real pairs",
                "sim pairs",
                "real median (mrad)",
                "sim median (mrad)",
                "sim / real",
                "target met",
            ]
        ),
        _row(["---"] * 7),
    ]
    for group, vols in GROUPS.items():
        r = angle_real[angle_real.volume_id.isin(vols)].angle
        s = angle_sim[angle_sim.volume_id.isin(vols)].angle
        ratio = s.median() / r.median()
        lines.append(
            _row(
                [
                    group,
                    len(r),
                    len(s),
                    f"{1e3 * r.median():.2f}",
                    f"{1e3 * s.median():.2f}",
                    f"{ratio:.2f}",
                    "yes" if abs(ratio - 1) <= 0.25 else "NO",
                ]
            )
        )
    n_sim, n_real = int((full.particle_id != 0).sum()), int((real.particle_id != 0).sum())
    lines += [
        "",
        f"Simulated / real signal hits: {n_sim} / {n_real} = {n_sim / n_real:.3f} "
        f"(target within 15 %: {'yes' if abs(n_sim / n_real - 1) <= 0.15 else 'NO'}).",
        "",
        "Calibration of x/X0 per volume (normal incidence): the value that would make that "
        "volume's median match, x_code (real median / sim median)^2:",
        "",
        _row(["volume", "x/X0 in code", "suggested"]),
        _row(["---"] * 3),
    ]
    for vol in geo.KNOWN_VOLUMES:
        r = angle_real[angle_real.volume_id == vol].angle.median()
        s = angle_sim[angle_sim.volume_id == vol].angle.median()
        lines.append(_row([vol, f"{X_OVER_X0[vol]:.4f}", f"{X_OVER_X0[vol] * (r / s) ** 2:.4f}"]))
    lines.append("")
    _figure_angles(angle_real, angle_sim, figures / "trackml_sim_scattering.png")

    return lines


def _section_hits_1000(det, config, base, figures) -> tuple[list[str], pd.DataFrame]:
    lines: list[str] = []
    table = read_particles(
        config.table_1000
        if Path(config.table_1000).exists()
        else geo.DETECTOR_DIR / "event000001000-particles.csv.gz"
    )
    sim1000 = simulate_event(table, base, 1000, det)["particles"]
    real_n, sim_n = table.nhits.to_numpy(), sim1000.nhits.to_numpy()
    pt = np.hypot(table.px, table.py)
    lines += [
        "## 3. Hits per particle (as-is, full physics, real particle table of event 1000)",
        "",
        f"Total hits: simulated {sim_n.sum()}, real {real_n.sum()} "
        f"(ratio {sim_n.sum() / real_n.sum():.3f}; "
        f"target within 5 %: {'yes' if abs(sim_n.sum() / real_n.sum() - 1) <= 0.05 else 'NO'}). "
        f"Particles with 0 hits: simulated {(sim_n == 0).sum()}, real {(real_n == 0).sum()}. "
        f"Mean hits of particles with hits: simulated {sim_n[sim_n > 0].mean():.2f}, "
        f"real {real_n[real_n > 0].mean():.2f}. "
        f"Same hit count for {np.mean(sim_n == real_n):.1%} of particles, "
        f"within 2 for {np.mean(np.abs(sim_n - real_n) <= 2):.1%}.",
        "",
        _row(["pT (GeV)", "particles", "real hits", "sim hits", "sim / real"]),
        _row(["---"] * 5),
    ]
    edges = [0.0, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, np.inf]
    for lo, hi in itertools.pairwise(edges):
        sel = (pt >= lo) & (pt < hi)
        ratio = sim_n[sel].sum() / max(real_n[sel].sum(), 1)
        lines.append(
            _row(
                [
                    f"{lo}-{hi}",
                    int(sel.sum()),
                    int(real_n[sel].sum()),
                    int(sim_n[sel].sum()),
                    f"{ratio:.3f}",
                ]
            )
        )
    lines.append("")
    _figure_nhits(real_n, sim_n, figures / "trackml_sim_nhits.png")

    return lines, table


def _section_default_event(det, real, sample_particles, table, config) -> list[str]:
    lines: list[str] = []
    default = SimConfig(seed=config.seed)
    frames = simulate_event(table, default, 0, det)
    event = merged(frames)
    sim_share, real_share = double_hit_shares(event), double_hit_shares(real)
    n_part = frames["particles"].nhits
    real_part = sample_particles.nhits
    lines += [
        "## 4. A default full event against the real sample's statistics",
        "",
        _row(["statistic", f"simulated (event 0, seed {config.seed})", "real sample"]),
        _row(["---"] * 3),
        _row(["hits", len(event), len(real)]),
        _row(
            [
                "noise share",
                f"{(event.particle_id == 0).mean():.3f}",
                f"{(real.particle_id == 0).mean():.3f}",
            ]
        ),
        _row(
            [
                "hits per particle with hits",
                f"{n_part[n_part > 0].mean():.2f}",
                f"{real_part[real_part > 0].mean():.2f}",
            ]
        ),
    ]
    for group in GROUPS:
        lines.append(
            _row(
                [
                    f"double hits, {group} (share of particle-layer pairs)",
                    f"{sim_share[group]:.3f}",
                    f"{real_share[group]:.3f}",
                ]
            )
        )
    for vol in geo.KNOWN_VOLUMES:
        lines.append(
            _row(
                [
                    f"share of hits in volume {vol}",
                    f"{(event.volume_id == vol).mean():.3f}",
                    f"{(real.volume_id == vol).mean():.3f}",
                ]
            )
        )
    lines.append("")

    return lines


def _section_speed(det, table, config) -> list[str]:
    lines: list[str] = []
    default = SimConfig(seed=config.seed)
    times, cpu_times = [], []
    simulate_event(table, default, 99, det)  # warm-up: detector bins, caches
    for i in range(config.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        frames = simulate_event(table, default, 100 + i, det)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    start_cmd = [
        sys.executable,
        "-c",
        "import time; t = time.perf_counter(); import data_processing.trackml_sim, sys; "
        "print(time.perf_counter() - t, 'torch' in sys.modules)",
    ]
    out = subprocess.run(
        start_cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=True
    ).stdout.split()
    help_start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "data_processing.trackml_sim", "--help"],
        capture_output=True,
        cwd=REPO_ROOT,
        check=True,
    )
    help_s = time.perf_counter() - help_start
    lines += [
        "## 5. Speed (one thread)",
        "",
        _row(["measure", "value"]),
        _row(["---"] * 2),
        _row(
            [
                f"default full event ({len(table):,} particles), simulate_event, "
                f"median of {config.repeats}",
                f"{np.median(times):.2f} s ({len(frames['truth'])} hits)",
            ]
        ),
        _row(["fastest run", f"{min(times):.2f} s"]),
        _row(
            [
                "CPU time of this process per event (median; wall time minus waiting for a core)",
                f"{np.median(cpu_times):.2f} s",
            ]
        ),
        _row(
            [
                "import of data_processing.trackml_sim",
                f"{float(out[0]):.2f} s (torch imported: {out[1]})",
            ]
        ),
        _row(["`python -m data_processing.trackml_sim --help` wall time", f"{help_s:.2f} s"]),
        _row(["load average at the end", f"{os.getloadavg()[0]:.2f}"]),
        "",
        "Figures: `figures/trackml_sim_tracks.png` (real and simulated hits of the same particles, "
        "x-y and r-z), `figures/trackml_sim_residuals.png` (per-volume distance histograms), "
        "`figures/trackml_sim_scattering.png`, `figures/trackml_sim_nhits.png`.",
        "",
    ]
    return lines + NOTES


#: What the numbers above rest on and what the simulator does not model (fixed text).
NOTES = [
    "## Notes",
    "",
    "- Field: the transverse bending of the real truth momenta between consecutive hits is "
    "an *apparent* field A = Bz - (pz / pT) Br, not Bz (for a track from the origin, "
    "pz / pT = z / r). With Br = -(r / 2) dBz/dz this gives Bz(z) = (2 / z^2) int_0^z z' A dz', "
    "which the simulator uses with its Br. Putting the measured medians in as Bz and adding "
    "Br counts Br twice and misses the strip endcaps by more than the uniform field does; "
    "the 'Bz only' column uses A as Bz without Br. Bz does not depend on r in this model.",
    "- Material: x/X0 per volume is an effective value fitted to the angle medians of "
    "section 2 (column 'suggested' re-measures it). In the short-strip endcaps (12, 14) it "
    "is 0.14-0.18, far above a module's material: there the estimator also holds what the "
    "field model misses. Energy loss uses the silicon thickness only.",
    "- Hit counts: three calibrated constants set them, each from a measured property of "
    "the real truth: particles below pT 0.15 GeV are not transported (81 % of such particles "
    "of event 1000 have no hit); particles are followed to the apex of their first turn, "
    "where they start moving back towards the beam line (the real sample has almost no hits "
    "after that point), except barrel loopers (abs(dz/ds) below half the transverse speed), "
    "which stop after 2 rad of transverse turning: followed to the apex they leave 15 % too "
    "many hits at pT 0.15-0.2 GeV and apex hits in the long-strip barrel that real tracks lack "
    "(a 2 rad cap on every particle instead loses the real forward hits of volumes 16 and 18); "
    "a particle ends at a crossing with "
    "probability 0.01 + 0.4 x/X0 (nuclear interactions: real central tracks lose their "
    "outer hits in about 8 % of cases, and outer strip-endcap layers are missed more often "
    "than pixel layers), and a crossing leaves no hit with probability 3 %.",
    "- Not modelled: secondaries produced in the detector (the table's secondaries are "
    "transported from their vertices like primaries; real ones often have no hits), delta "
    "rays, cluster shapes and the cells file, r-dependence of the field, electrons' "
    "bremsstrahlung.",
    "- Timing: measured with one thread on a 2-core machine shared with other jobs (load "
    "average above): the wall time includes waiting for a core; the CPU time is the "
    "simulator's own cost. Writing the three csv.gz files of a full event takes about 1 s "
    "more (pandas to_csv).",
    "",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--out", default=BenchConfig.out)
    parser.add_argument("--seed", type=int, default=BenchConfig.seed)
    args = parser.parse_args(argv)
    config = BenchConfig(out=args.out, repeats=args.repeats, seed=args.seed)
    print(f"config: {asdict(config)}")
    figures = Path(config.figures)
    figures.mkdir(parents=True, exist_ok=True)
    det = geo.load_detector()
    real, sample_particles = read_real(config.sample_prefix)
    lines: list[str] = ["# Fast TrackML simulator: validation against real data", ""]
    lines += [
        "Made by `python benchmarks/trackml_sim.py` "
        f"(seed {config.seed}, {config.repeats} timing repeats) on "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} at start "
        "(the machine was shared with other jobs unless that figure is near 0).",
        "",
    ]
    base = SimConfig(seed=config.seed, as_is=True)
    lines += _section_geometry(det, real, sample_particles, base, figures)
    lines += _section_scattering(det, real, sample_particles, base, figures)
    section, table = _section_hits_1000(det, config, base, figures)
    lines += section
    lines += _section_default_event(det, real, sample_particles, table, config)
    lines += _section_speed(det, table, config)
    Path(config.out).write_text("\n".join(lines))
    print("\n".join(lines))


def _figure_tracks(real: pd.DataFrame, sim: pd.DataFrame, path: Path, n: int = 25) -> None:
    counts = real[real.particle_id != 0].particle_id.value_counts()
    chosen = counts.index[:n]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for frame, style, label in (
        (real, dict(s=14, c="k", marker="o"), "real"),
        (sim, dict(s=6, c="r", marker="x"), "simulated"),
    ):
        sel = frame[frame.particle_id.isin(chosen)]
        axes[0].scatter(sel.tx, sel.ty, label=label, **style)
        axes[1].scatter(sel.tz, np.hypot(sel.tx, sel.ty), label=label, **style)
    axes[0].set(xlabel="x (mm)", ylabel="y (mm)", title=f"{n} real sample particles, x-y")
    axes[1].set(xlabel="z (mm)", ylabel="r (mm)", title="r-z")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure_residuals(near: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(3, 3, figsize=(12, 9))
    bins = np.logspace(-3, 2.5, 45)
    for ax, vol in zip(axes.ravel(), geo.KNOWN_VOLUMES, strict=True):
        sel = near[near.volume_id == vol]
        ax.hist(sel.d.dropna().clip(1e-3, 300), bins=bins, histtype="step", label="simulator")
        ax.hist(
            sel.uniform.dropna().clip(1e-3, 300),
            bins=bins,
            histtype="step",
            label="uniform 2 T helix",
        )
        ax.set_xscale("log")
        ax.set_title(f"volume {vol}")
        ax.set_xlabel("distance to real hit (mm)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_angles(real: pd.DataFrame, sim: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    bins = np.linspace(-6, -0.5, 45)
    for ax, (group, vols) in zip(axes, GROUPS.items(), strict=True):
        for frame, label in ((real, "real"), (sim, "simulated")):
            angle = frame[frame.volume_id.isin(vols)].angle.clip(1e-6)
            ax.hist(np.log10(angle), bins=bins, histtype="step", density=True, label=label)
        ax.set(title=group, xlabel="log10 angle between consecutive truth momenta (rad)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_nhits(real_n: np.ndarray, sim_n: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(0, max(real_n.max(), sim_n.max()) + 2) - 0.5
    ax.hist(real_n, bins=bins, histtype="step", label="real nhits (event 1000)")
    ax.hist(sim_n, bins=bins, histtype="step", label="simulated, as-is")
    ax.set(xlabel="hits per particle", ylabel="particles", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
