"""Fast simulation of TrackML events on the real TrackML detector.

Particles (the real particle table of Kaggle event 1000, shipped in
``data_processing/trackml_detector/``, or any TrackML particles file) are transported
through the real module geometry in the measured solenoid field (``trackml_transport``),
then the detector response is applied: hit inefficiency, Gaussian measurement smearing of
width pitch / sqrt(12) along the module's u and v axes, and noise hits spread over the
modules as in the real sample. Truth weights follow trackml-library's rule
(``trackml_weights``). Output: ``DIR/eventNNNNNNNNN-{hits,truth,particles}.csv.gz`` in the
TrackML layout (mm, GeV; noise hits have particle_id 0 and zero truth momentum).

Command line::

    python -m data_processing.trackml_sim --out DIR [--events N] [--first-event-id K]
        [--seed S] [--particles FILE] [--as-is] [--ideal] [--n-particles N]
        [--noise-fraction F] [--jobs J]

Without ``--as-is`` every event draws ``--n-particles`` particles (default: as many as the
table holds) with replacement from the table, rotates each by a random azimuth and mirrors
it in z with probability 1/2. ``--as-is`` simulates exactly the table's particles (same ids,
vertices and momenta). ``--ideal`` switches off scattering, energy loss, nuclear
interactions, smearing, inefficiency and noise. Each event's random stream is
``np.random.SeedSequence(seed, spawn_key=(event_id,))``, so the output does not depend on
``--jobs``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing import trackml_geometry as geo
from data_processing.common import atomic_write
from data_processing.errors import DefaultsHelpFormatter, UserError, run_cli
from data_processing.trackml_field import Field
from data_processing.trackml_transport import Crossings, TransportConfig, transport
from data_processing.trackml_weights import truth_weights

PARTICLES_FILE = geo.DETECTOR_DIR / "event000001000-particles.csv.gz"
PARTICLE_COLUMNS = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q")

#: Share of noise hits among all hits of the real sample event000000001 (829 of 5,527).
REAL_NOISE_FRACTION = 0.15
#: Share of the real sample's noise hits per volume (of its 829 noise hits).
NOISE_VOLUME_SHARES = {
    7: 0.0446,
    8: 0.0989,
    9: 0.0398,
    12: 0.0651,
    13: 0.2967,
    14: 0.0591,
    16: 0.0290,
    17: 0.3209,
    18: 0.0458,
}
#: Probability that a crossing leaves no hit. Kept small: the real share of double hits
#: (36 % of pixel particle-layer pairs) is close to what the ideal transport gives (37 %),
#: which a large per-hit inefficiency would lower; 3 % brings it to the real value.
DEFAULT_INEFFICIENCY = 0.03
#: TrackML records (almost) no hits for particles below this transverse momentum (GeV):
#: 81 % of event 1000's 1,374 particles below it have nhits = 0, and no particle of the
#: real sample below it has two or more hits.
DEFAULT_MIN_PT_GEV = 0.15


@dataclass(frozen=True)
class SimConfig:
    """What one simulated event contains. ``n_particles`` None = as many as the table."""

    seed: int = 0
    as_is: bool = False
    n_particles: int | None = None
    noise_fraction: float = REAL_NOISE_FRACTION
    inefficiency: float = DEFAULT_INEFFICIENCY
    smearing: bool = True
    min_pt_gev: float = DEFAULT_MIN_PT_GEV
    field_kind: str = "solenoid"
    radial_field: bool = True
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_fraction < 1.0:
            raise UserError(f"--noise-fraction must be in [0, 1), not {self.noise_fraction}")
        if not 0.0 <= self.inefficiency < 1.0:
            raise UserError(f"inefficiency must be in [0, 1), not {self.inefficiency}")
        if self.n_particles is not None and self.n_particles < 0:
            raise UserError(f"--n-particles must be >= 0, not {self.n_particles}")

    def ideal(self) -> SimConfig:
        """The same config with every random detector effect off (deterministic transport)."""
        return replace(
            self,
            noise_fraction=0.0,
            inefficiency=0.0,
            smearing=False,
            transport=replace(
                self.transport,
                scattering=False,
                energy_loss=False,
                interaction_probability=0.0,
                interactions_per_x0=0.0,
            ),
        )


def read_particles(path: str | os.PathLike[str] = PARTICLES_FILE) -> pd.DataFrame:
    """A TrackML particles table (particle_id, vx..pz, q[, nhits]); UserError if unusable."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        EOFError,
        gzip.BadGzipFile,
    ) as error:
        raise UserError(f"{path}: not a CSV particles file ({error})") from None
    missing = [c for c in PARTICLE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} in particles file")
    numeric = table[list(PARTICLE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().any()
    if bad.any():
        raise UserError(f"{path}: column {bad.idxmax()} has missing or non-numeric values")
    duplicated = table["particle_id"][table["particle_id"].duplicated()]
    if len(duplicated):
        raise UserError(f"{path}: duplicated particle_id {duplicated.iloc[0]}")
    return table


def draw_particles(
    table: pd.DataFrame, config: SimConfig, rng: np.random.Generator
) -> pd.DataFrame:
    """The particles of one event: ``table`` itself (as-is) or a rotated, mirrored resample."""
    columns = list(PARTICLE_COLUMNS)
    if config.as_is:
        return table[columns].reset_index(drop=True)
    n = len(table) if config.n_particles is None else config.n_particles
    pick = rng.integers(0, len(table), size=n)
    source = table[columns].to_numpy(np.float64)[pick]
    phi = rng.uniform(0.0, 2.0 * np.pi, size=n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    c, s = np.cos(phi), np.sin(phi)
    out = pd.DataFrame({"particle_id": np.arange(1, n + 1, dtype=np.int64)})
    for x, y, z in (("vx", "vy", "vz"), ("px", "py", "pz")):
        ix, iy, iz = columns.index(x), columns.index(y), columns.index(z)
        out[x] = c * source[:, ix] - s * source[:, iy]
        out[y] = s * source[:, ix] + c * source[:, iy]
        out[z] = mirror * source[:, iz]
    out["q"] = source[:, columns.index("q")].astype(np.int64)
    return out


def _smear(det: geo.Detector, module: np.ndarray, position: np.ndarray, rng) -> np.ndarray:
    """Measured positions [k, 3]: the true point moved in the module plane by Gaussians of
    width pitch / sqrt(12) along u and v."""
    local = geo.to_local(det, module, position)
    local[:, 2] = 0.0
    noise = rng.standard_normal((len(module), 2))
    local[:, 0] += noise[:, 0] * det.pitch_u[module] / np.sqrt(12.0)
    local[:, 1] += noise[:, 1] * det.pitch_v[module] / np.sqrt(12.0)
    return geo.to_global(det, module, local)


def noise_hits(
    det: geo.Detector, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noise hits: (module [count], position [count, 3] mm). Volumes drawn with
    NOISE_VOLUME_SHARES, modules within a volume by area, points uniform on the surface."""
    per_module = np.zeros(det.n_modules)
    for volume, share in NOISE_VOLUME_SHARES.items():
        in_volume = det.volume_id == volume
        per_module[in_volume] = share * det.area[in_volume] / det.area[in_volume].sum()
    module = rng.choice(det.n_modules, size=count, p=per_module / per_module.sum())
    minhu, maxhu, hv = det.minhu[module], det.maxhu[module], det.hv[module]
    # v has density proportional to the width hu(v): invert its quadratic CDF.
    slope = (maxhu - minhu) / (2.0 * hv)
    target = rng.random(count) * (minhu + maxhu) * hv
    with np.errstate(invalid="ignore", divide="ignore"):
        quad = (-minhu + np.sqrt(minhu * minhu + 2.0 * slope * target)) / slope
    s = np.where(slope > 1e-12, quad, target / minhu)
    v = s - hv
    u = (2.0 * rng.random(count) - 1.0) * geo.half_width_u(minhu, maxhu, hv, v)
    local = np.stack([u, v, np.zeros(count)], axis=1)
    return module, geo.to_global(det, module, local)


def simulate_event(
    table: pd.DataFrame, config: SimConfig, event_id: int, det: geo.Detector | None = None
) -> dict[str, pd.DataFrame]:
    """Simulate one event. Returns {"hits", "truth", "particles"} DataFrames (TrackML
    columns; hit ids 1..n in (volume, layer, module) order)."""
    det = geo.load_detector() if det is None else det
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(event_id,)))
    particles = draw_particles(table, config, rng)
    vertex = particles[["vx", "vy", "vz"]].to_numpy(np.float64)
    momentum = particles[["px", "py", "pz"]].to_numpy(np.float64)
    charge = particles["q"].to_numpy(np.float64)
    transported = np.hypot(momentum[:, 0], momentum[:, 1]) >= config.min_pt_gev
    field_map = Field(config.field_kind, include_radial=config.radial_field)
    cross: Crossings = transport(
        det, field_map, vertex, momentum, np.where(transported, charge, 0.0), config.transport, rng
    )
    keep = rng.random(len(cross.particle)) >= config.inefficiency
    part, module = cross.particle[keep], cross.module[keep]
    true_pos, true_mom = cross.position[keep], cross.momentum[keep]
    measured = _smear(det, module, true_pos, rng) if config.smearing else true_pos.copy()
    n_signal = len(part)
    n_noise = round(config.noise_fraction / (1.0 - config.noise_fraction) * n_signal)
    noise_module, noise_pos = noise_hits(det, n_noise, rng)

    pid = np.concatenate(
        [particles["particle_id"].to_numpy(np.int64)[part], np.zeros(n_noise, np.int64)]
    )
    module_all = np.concatenate([module, noise_module])
    pos_all = np.concatenate([measured, noise_pos])
    tpos = np.concatenate([true_pos, noise_pos])
    tmom = np.concatenate([true_mom, np.zeros((n_noise, 3))])
    order = np.lexsort((pos_all[:, 0], module_all))  # hit ids in module order, then by x
    pid, module_all, pos_all, tpos, tmom = (
        a[order] for a in (pid, module_all, pos_all, tpos, tmom)
    )
    hit_id = np.arange(1, len(pid) + 1, dtype=np.int64)

    particles = particles.copy()
    counts = np.bincount(part, minlength=len(particles))
    particles["q"] = particles["q"].astype(np.int64)
    particles["nhits"] = counts.astype(np.int64)
    hits = pd.DataFrame(
        {
            "hit_id": hit_id,
            "x": pos_all[:, 0],
            "y": pos_all[:, 1],
            "z": pos_all[:, 2],
            "volume_id": det.volume_id[module_all],
            "layer_id": det.layer_id[module_all],
            "module_id": det.module_id[module_all],
        }
    )
    truth = pd.DataFrame(
        {
            "hit_id": hit_id,
            "particle_id": pid,
            "tx": tpos[:, 0],
            "ty": tpos[:, 1],
            "tz": tpos[:, 2],
            "tpx": tmom[:, 0],
            "tpy": tmom[:, 1],
            "tpz": tmom[:, 2],
        }
    )
    truth["weight"] = truth_weights(pid, tpos[:, 2], particles)
    return {"hits": hits, "truth": truth, "particles": particles}


def write_event(frames: dict[str, pd.DataFrame], directory: Path, event_id: int) -> list[Path]:
    """Write ``directory/eventNNNNNNNNN-{hits,truth,particles}.csv.gz`` atomically."""
    paths = []
    for kind in ("hits", "truth", "particles"):
        path = directory / f"event{event_id:09d}-{kind}.csv.gz"
        with atomic_write(path) as tmp:
            text = frames[kind].to_csv(index=False, float_format="%.7g", lineterminator="\n")
            tmp.write_bytes(gzip.compress(text.encode(), compresslevel=1, mtime=0))
        paths.append(path)
    return paths


def _simulate_and_write(args: tuple) -> dict:
    """Worker: simulate one event and write it (top-level so a process pool can call it)."""
    table, config, event_id, directory = args
    det = geo.load_detector()  # built once per process, outside the timed simulation
    start = time.perf_counter()
    frames = simulate_event(table, config, event_id, det)
    simulated = time.perf_counter() - start
    write_event(frames, directory, event_id)
    truth = frames["truth"]
    return {
        "event_id": event_id,
        "hits": len(truth),
        "noise": int((truth["particle_id"] == 0).sum()),
        "particles": len(frames["particles"]),
        "simulate_s": simulated,
        "total_s": time.perf_counter() - start,
    }


def simulate_events(
    out_dir: str | os.PathLike[str],
    config: SimConfig,
    n_events: int = 1,
    first_event_id: int = 0,
    particles_path: str | os.PathLike[str] = PARTICLES_FILE,
    jobs: int = 1,
) -> list[dict]:
    """Simulate and write ``n_events`` events (ids from ``first_event_id``); one summary
    dict per event. ``jobs`` > 1 runs events in parallel processes (same output)."""
    table = read_particles(particles_path)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tasks = [(table, config, first_event_id + i, directory) for i in range(n_events)]
    if jobs <= 1 or n_events <= 1:
        return [_simulate_and_write(task) for task in tasks]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_simulate_and_write, tasks))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_processing.trackml_sim",
        description="Simulate TrackML events (hits, truth, particles) on the real detector.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--events", type=int, default=1, help="number of events")
    parser.add_argument(
        "--first_event_id", "--first-event-id", type=int, default=0, help="id of the first event"
    )
    parser.add_argument("--seed", type=int, default=0, help="root random seed")
    parser.add_argument("--particles", default=str(PARTICLES_FILE), help="TrackML particles file")
    parser.add_argument(
        "--as_is", "--as-is", action="store_true", help="simulate exactly the file's particles"
    )
    parser.add_argument(
        "--ideal", action="store_true", help="no scattering, loss, smearing, inefficiency, noise"
    )
    parser.add_argument(
        "--n_particles",
        "--n-particles",
        type=int,
        default=None,
        help="particles per event (default: as many as the particles file holds)",
    )
    parser.add_argument(
        "--noise_fraction",
        "--noise-fraction",
        type=float,
        default=REAL_NOISE_FRACTION,
        help="share of noise hits",
    )
    parser.add_argument("--jobs", type=int, default=1, help="events simulated in parallel")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI: parse ``argv``, print the config, simulate, print one line per event."""
    args = _build_parser().parse_args(argv)
    if args.events < 0 or args.first_event_id < 0 or args.jobs < 1:
        raise UserError("--events and --first-event-id must be >= 0 and --jobs >= 1")
    if args.as_is and args.n_particles is not None:
        raise UserError(
            "--n-particles cannot be combined with --as-is (as-is keeps the file's particles)"
        )
    config = SimConfig(
        seed=args.seed,
        as_is=args.as_is,
        n_particles=args.n_particles,
        noise_fraction=args.noise_fraction,
    )
    if args.ideal:
        config = config.ideal()
    print(
        f"out: {args.out}  events: {args.events} from id {args.first_event_id}  jobs: {args.jobs}"
    )
    print(f"particles: {args.particles}")
    print(f"config: {asdict(config)}")
    for row in simulate_events(
        args.out, config, args.events, args.first_event_id, args.particles, args.jobs
    ):
        print(
            f"event {row['event_id']:09d}: {row['hits']} hits ({row['noise']} noise), "
            f"{row['particles']} particles, simulated in {row['simulate_s']:.2f} s, "
            f"written in {row['total_s'] - row['simulate_s']:.2f} s"
        )


if __name__ == "__main__":
    run_cli(main)
