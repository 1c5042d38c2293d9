"""Tests of the fast TrackML simulator (data_processing.trackml_sim and its modules)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_processing import trackml_geometry as geo
from data_processing.errors import UserError
from data_processing.trackml_field import Field
from data_processing.trackml_sim import SimConfig, read_particles, simulate_event
from data_processing.trackml_transport import TransportConfig, transport
from data_processing.trackml_weights import order_weight_table, truth_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
IDEAL = TransportConfig(
    scattering=False, energy_loss=False, interaction_probability=0.0, interactions_per_x0=0.0
)


@pytest.fixture(scope="module")
def det() -> geo.Detector:
    return geo.load_detector()


def test_shipped_detector_has_all_modules(det):
    assert det.n_modules == 18728
    assert sorted(set(det.volume_id.tolist())) == list(geo.KNOWN_VOLUMES)
    assert len(det.layer_volume) == 48


def test_module_centre_maps_to_local_origin_and_back(det):
    modules = np.arange(0, det.n_modules, 97)
    local = geo.to_local(det, modules, det.centre[modules])
    np.testing.assert_allclose(local, 0.0, atol=1e-9)
    rng = np.random.default_rng(0)
    points = det.centre[modules] + rng.normal(0, 5, (len(modules), 3))
    back = geo.to_global(det, modules, geo.to_local(det, modules, points))
    # the file's rotations are orthonormal to its 6 printed digits: R^T inverts R to 1e-5 mm
    np.testing.assert_allclose(back, points, atol=1e-4)


def test_trapezoid_and_rectangle_bounds(det):
    trapezoid = int(np.flatnonzero(det.maxhu - det.minhu > 5)[0])
    rectangle = int(np.flatnonzero(det.maxhu == det.minhu)[0])
    hv, lo, hi = det.hv[trapezoid], det.minhu[trapezoid], det.maxhu[trapezoid]
    local = np.array(
        [
            [0.0, 0.0, 0.0],  # centre
            [hi - 0.5, hv - 0.5, 0.0],  # wide end: inside
            [hi - 0.5, -hv + 0.5, 0.0],  # same u at the narrow end: outside
            [0.0, hv + 0.5, 0.0],  # beyond v
            [lo - 0.5, -hv + 0.5, 0.0],  # narrow end, just inside
        ]
    )
    inside = geo.inside_bounds(det, np.full(len(local), trapezoid), local)
    assert inside.tolist() == [True, True, False, False, True]
    hu_r, hv_r = det.maxhu[rectangle], det.hv[rectangle]
    local = np.array([[hu_r - 0.01, hv_r - 0.01, 0], [hu_r + 0.01, 0, 0], [0, -hv_r - 0.01, 0]])
    assert geo.inside_bounds(det, np.full(3, rectangle), local).tolist() == [True, False, False]


def test_straight_high_pt_track_hits_every_barrel_layer(det):
    direction = np.array([[np.cos(0.3), np.sin(0.3), 0.05]])
    cross = transport(
        det, Field(), np.zeros((1, 3)), 100.0 * direction, np.array([1.0]), IDEAL, None
    )
    layers = set(
        zip(det.volume_id[cross.module].tolist(), det.layer_id[cross.module].tolist(), strict=True)
    )
    expected = {
        (8, 2),
        (8, 4),
        (8, 6),
        (8, 8),
        (13, 2),
        (13, 4),
        (13, 6),
        (13, 8),
        (17, 2),
        (17, 4),
    }
    assert layers == expected
    # hits lie on their modules' mid-planes, in order of increasing radius
    local = geo.to_local(det, cross.module, cross.position)
    assert np.abs(local[:, 2]).max() < 1e-6
    assert np.all(np.diff(np.hypot(cross.position[:, 0], cross.position[:, 1])) > -1.0)


def test_forward_track_hits_endcap_disks_only(det):
    cross = transport(
        det, Field(), np.zeros((1, 3)), np.array([[3.0, 0.0, 30.0]]), np.array([-1.0]), IDEAL, None
    )
    volumes = set(det.volume_id[cross.module].tolist())
    assert volumes and volumes <= {8, 9, 14, 18}
    assert 9 in volumes and np.all(cross.position[:, 2] > 0)


def test_field_off_gives_straight_lines(det):
    rng = np.random.default_rng(1)
    momentum = rng.normal(0, 0.5, (40, 3))
    vertex = rng.normal(0, 1, (40, 3))
    cross = transport(det, Field("off"), vertex, momentum, np.ones(40), IDEAL, None)
    assert len(cross.particle) > 100
    direction = momentum / np.linalg.norm(momentum, axis=1, keepdims=True)
    offset = cross.position - vertex[cross.particle]
    along = np.einsum("ij,ij->i", offset, direction[cross.particle])
    perpendicular = offset - along[:, None] * direction[cross.particle]
    assert np.abs(perpendicular).max() < 1e-6
    assert np.all(along > 0)


def test_positive_charge_turns_clockwise(det):
    for q, sign in ((1.0, -1.0), (-1.0, 1.0)):
        cross = transport(
            det, Field(), np.zeros((1, 3)), np.array([[0.5, 0.0, 0.0]]), np.array([q]), IDEAL, None
        )
        y = cross.position[:, 1]
        assert len(y) >= 6 and np.all(np.sign(y) == sign)
        # sagitta of a 0.5 GeV track in about 2 T at r = 172 mm: r^2 / (2 R) with R = 834 mm
        last_pixel = cross.position[det.volume_id[cross.module] == 8][-1]
        assert abs(last_pixel[1]) == pytest.approx(172.0**2 / (2 * 834.0), rel=0.05)


def test_charge_sign_against_a_real_particle(det, trackml_sample_dir):
    particles = pd.read_csv(trackml_sample_dir / "event000000001-particles.csv.gz")
    truth = pd.read_csv(trackml_sample_dir / "event000000001-truth.csv.gz")
    hits = pd.read_csv(trackml_sample_dir / "event000000001-hits.csv.gz").merge(truth, on="hit_id")
    pt = np.hypot(particles.px, particles.py)
    barrel_counts = hits[hits.volume_id == 8].particle_id.value_counts()
    candidates = particles[
        (pt > 0.4)
        & (pt < 0.8)
        & particles.particle_id.isin(barrel_counts.index[barrel_counts >= 4])
    ]
    chosen = candidates.iloc[:1]
    real = hits[(hits.particle_id == chosen.particle_id.iloc[0]) & (hits.volume_id == 8)]
    assert len(real) >= 4
    distances = {}
    for flip in (1.0, -1.0):
        table = chosen.assign(q=chosen.q * flip)
        frames = simulate_event(table, SimConfig(as_is=True).ideal(), 1, det)
        sim = frames["truth"].merge(frames["hits"], on="hit_id")
        d = np.linalg.norm(
            real[["tx", "ty", "tz"]].to_numpy()[:, None, :]
            - sim[["tx", "ty", "tz"]].to_numpy()[None],
            axis=2,
        )
        distances[flip] = np.median(d.min(axis=1))
    assert distances[1.0] < 0.5 and distances[-1.0] > 5.0


def test_order_weights_match_the_published_rule():
    table = order_weight_table()
    # 4 hits: the proposal (10, 8, 6, 5, 3, 3, 3, 5, 6) stretched over 4 points
    np.testing.assert_allclose(table[4, :4], np.array([10.0, 16 / 3, 3.0, 6.0]) / (19 + 16 / 3))
    np.testing.assert_allclose(table[9, :9], np.array([10, 8, 6, 5, 3, 3, 3, 5, 6]) / 49.0)
    assert np.all(table[:4] == 0)
    np.testing.assert_allclose(table[4:].sum(axis=1), 1.0)


def test_weights_sum_to_one_noise_and_short_tracks_weigh_zero():
    particles = pd.DataFrame(
        {
            "particle_id": [1, 2],
            "vz": [0.0, 0.0],
            "px": [3.0, 0.3],
            "py": [0.0, 0.0],
            "nhits": [4, 3],
        }
    )
    pid = np.array([1, 1, 1, 1, 2, 2, 2, 0, 0])
    tz = np.array([40.0, 10.0, 30.0, 20.0, 1.0, 2.0, 3.0, 5.0, 6.0])
    w = truth_weights(pid, tz, particles)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w[4:] == 0)
    # hits ranked by |tz - vz|: 10, 20, 30, 40 mm get 10, 16/3, 3, 6 (pT weight 1 at 3 GeV)
    np.testing.assert_allclose(w[[1, 3, 2, 0]], np.array([10.0, 16 / 3, 3.0, 6.0]) / (19 + 16 / 3))


def test_simulated_event_weights_noise_and_columns(det):
    table = read_particles()
    frames = simulate_event(table, SimConfig(seed=3, n_particles=400), 5, det)
    hits, truth, particles = frames["hits"], frames["truth"], frames["particles"]
    assert list(hits.columns) == ["hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id"]
    assert list(truth.columns) == [
        "hit_id",
        "particle_id",
        "tx",
        "ty",
        "tz",
        "tpx",
        "tpy",
        "tpz",
        "weight",
    ]
    assert list(particles.columns) == [
        "particle_id",
        "vx",
        "vy",
        "vz",
        "px",
        "py",
        "pz",
        "q",
        "nhits",
    ]
    noise = truth.particle_id == 0
    assert noise.mean() == pytest.approx(0.15, abs=0.005)
    assert truth.weight.sum() == pytest.approx(1.0)
    assert np.all(truth.weight[noise] == 0) and np.all(truth[["tpx", "tpy", "tpz"]][noise] == 0)
    counts = truth[~noise].particle_id.value_counts()
    assert (particles.set_index("particle_id").nhits[counts.index] == counts).all()
    assert 6 < counts.mean() < 14
    # every hit lies on its module (measured points are on the mid-plane, inside or near bounds)
    module = det.module_lookup(
        hits.volume_id.to_numpy(), hits.layer_id.to_numpy(), hits.module_id.to_numpy()
    )
    assert np.all(module >= 0)
    local = geo.to_local(det, module, hits[["x", "y", "z"]].to_numpy())
    assert np.abs(local[:, 2]).max() < 1e-6


def test_deterministic_and_seed_dependent(det):
    table = read_particles()
    config = SimConfig(seed=11, n_particles=300)
    a = simulate_event(table, config, 2, det)
    b = simulate_event(table, config, 2, det)
    c = simulate_event(table, replace(config, seed=12), 2, det)
    pd.testing.assert_frame_equal(a["truth"], b["truth"])
    assert len(a["truth"]) != len(c["truth"]) or not np.allclose(a["truth"].tx, c["truth"].tx)
    ideal_a = simulate_event(table, replace(config, as_is=True).ideal(), 2, det)
    ideal_b = simulate_event(table, replace(config, as_is=True, seed=99).ideal(), 2, det)
    pd.testing.assert_frame_equal(ideal_a["hits"], ideal_b["hits"])
    assert (ideal_a["truth"].particle_id != 0).all()


def test_as_is_keeps_particles(det):
    table = read_particles().iloc[:200]
    frames = simulate_event(table, SimConfig(as_is=True), 0, det)
    cols = ["particle_id", "vx", "vy", "vz", "px", "py", "pz"]
    pd.testing.assert_frame_equal(frames["particles"][cols], table[cols].reset_index(drop=True))


def test_cli_jobs_do_not_change_output_and_loader_reads_it(tmp_path):
    from data_processing.trackml_events import read_event

    cmd = [
        sys.executable,
        "-m",
        "data_processing.trackml_sim",
        "--events",
        "2",
        "--n-particles",
        "150",
        "--seed",
        "4",
    ]
    for jobs in ("1", "2"):
        subprocess.run(
            [*cmd, "--out", str(tmp_path / jobs), "--jobs", jobs],
            check=True,
            cwd=REPO_ROOT,
            capture_output=True,
        )
    for name in (
        "event000000000-hits.csv.gz",
        "event000000001-truth.csv.gz",
        "event000000001-particles.csv.gz",
    ):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    event = read_event(tmp_path / "1" / "event000000001")
    assert len(event.hits) == len(event.truth) > 500
    assert (tmp_path / "1" / "event000000000-hits.csv.gz").read_bytes() != (
        tmp_path / "1" / "event000000001-hits.csv.gz"
    ).read_bytes()


def test_bad_particles_file_gives_clear_error(tmp_path):
    bad = tmp_path / "particles.csv"
    read_particles().drop(columns=["pz"]).iloc[:5].to_csv(bad, index=False)
    with pytest.raises(UserError, match=r"particles\.csv.*pz"):
        read_particles(bad)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_processing.trackml_sim",
            "--out",
            str(tmp_path / "o"),
            "--particles",
            str(bad),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "pz" in result.stderr


def test_unknown_volume_gives_clear_error(tmp_path):
    table = geo.read_detector_table()
    table.loc[0, "volume_id"] = 21
    path = tmp_path / "detectors.csv"
    table.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"detectors\.csv.*volume_id 21"):
        geo.read_detector_table(path)
    with pytest.raises(UserError, match="missing column"):
        table.drop(columns=["module_t"]).to_csv(path, index=False)
        geo.read_detector_table(path)


def test_cli_does_not_import_torch():
    code = "import sys, data_processing.trackml_sim; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_conflicting_options_exit_with_one_line(tmp_path, capsys):
    from data_processing.errors import run_cli
    from data_processing.trackml_sim import main

    with pytest.raises(SystemExit) as stop:
        run_cli(main, ["--out", str(tmp_path), "--as-is", "--n-particles", "5"])
    assert stop.value.code == 2
    assert "--n-particles" in capsys.readouterr().err


def test_noise_hits_lie_on_module_surfaces(det):
    from data_processing.trackml_sim import NOISE_VOLUME_SHARES, noise_hits

    module, position = noise_hits(det, 20000, np.random.default_rng(5))
    local = geo.to_local(det, module, position)
    assert np.abs(local[:, 2]).max() < 1e-6
    assert geo.inside_bounds(det, module, local * [0.999, 0.999, 1.0]).all()
    shares = pd.Series(det.volume_id[module]).value_counts(normalize=True)
    for volume, share in NOISE_VOLUME_SHARES.items():
        assert shares[volume] == pytest.approx(share, abs=0.01)
    # trapezoids: uniform on the surface, so the wide half (v > 0) holds more hits
    trapezoid = det.maxhu[module] > det.minhu[module] + 5
    assert 0.53 < (local[trapezoid, 1] > 0).mean() < 0.65


def test_looper_is_followed_to_the_apex_of_its_first_turn(det):
    # pT 0.3 GeV, no pz: a circle of radius about 500 mm through the origin in the barrel
    cross = transport(
        det, Field(), np.zeros((1, 3)), np.array([[0.0, 0.3, 0.0]]), np.array([1.0]), IDEAL, None
    )
    r = np.hypot(cross.position[:, 0], cross.position[:, 1])
    radius = 0.3 / (0.299792458e-3 * 2.0)
    assert r.max() < 2 * radius
    assert np.all(np.diff(r) > -5.0)  # never back towards the beam line
    volumes = set(det.volume_id[cross.module].tolist())
    assert {8, 13, 17} <= volumes  # reaches the long strips at r = 820 mm (2R = 1000 mm)


def test_reads_the_sample_detector_copy_with_its_index_column(trackml_sample_dir):
    table = geo.read_detector_table(trackml_sample_dir / "detectors.csv.gz")
    shipped = geo.read_detector_table()
    assert list(table.columns) == list(shipped.columns)
    np.testing.assert_allclose(
        table[geo.DETECTOR_COLUMNS].to_numpy(), shipped[geo.DETECTOR_COLUMNS].to_numpy()
    )


def test_weights_reproduce_the_real_sample_truth_weights(trackml_sample_dir):
    # The sample's weights follow the phase-2 rule: the phase-1 rule (ours) with particles
    # of generation != 0 (bits 24-35 of the particle id) set to 0, not renormalised.
    truth = pd.read_csv(trackml_sample_dir / "event000000001-truth.csv.gz")
    particles = pd.read_csv(trackml_sample_dir / "event000000001-particles.csv.gz")
    ours = truth_weights(truth.particle_id.to_numpy(), truth.tz.to_numpy(), particles)
    generation = (truth.particle_id.to_numpy() & 0x0000000FFF000000) >> 24
    ours = np.where(generation == 0, ours, 0.0)
    real = truth.weight.to_numpy()
    assert (ours > 0).sum() == (real > 0).sum() > 3000
    np.testing.assert_allclose(ours / ours.sum(), real / real.sum(), rtol=1e-4, atol=1e-12)
