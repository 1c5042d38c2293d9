"""Tests for the REDVID-style event simulator (data_processing/redvid.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_processing.errors import USER_ERROR_EXIT, UserError, run_cli
from data_processing.redvid import (
    SimulationConfig,
    generate_dataset,
    iter_event_chunks,
    main,
    parse_track_range,
    simulate_events,
)
from data_processing.redvid_detector import default_geometry, wrap_angle
from data_processing.redvid_format import REDVID_COLUMNS, write_redvid_csv

GEOMETRY = default_geometry()
HEADER = (
    "event_id;sub_detector_id;sub_detector_type;track_id;track_type;radial_const;"
    "azimuthal_const;pitch_const;radial_coeff;azimuthal_coeff;pitch_coeff;hit_id;"
    "hit_r;hit_theta;hit_z"
)


def _simulate(**kwargs: object) -> pd.DataFrame:
    """Small default data set; keyword arguments override SimulationConfig fields."""
    params: dict[str, object] = {"n_events": 40, "tracks": "10-50", "seed": 1}
    params.update(kwargs)
    return simulate_events(SimulationConfig(**params))  # type: ignore[arg-type]


def _layer_arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-hit surface coordinate and bounds of the hit's layer."""
    layer = df["sub_detector_id"].to_numpy()
    nb = GEOMETRY.n_barrels
    surface = np.array(GEOMETRY.barrel_radii + GEOMETRY.disk_z)
    low = np.array(tuple(-h for h in GEOMETRY.barrel_half_lengths) + GEOMETRY.disk_inner_radii)
    high = np.array(GEOMETRY.barrel_half_lengths + GEOMETRY.disk_outer_radii)
    return {
        "is_disk": layer >= nb,
        "surface": surface[layer],
        "low": low[layer],
        "high": high[layer],
    }


def _assert_on_surfaces(df: pd.DataFrame) -> None:
    lay = _layer_arrays(df)
    r, z = df["hit_r"].to_numpy(), df["hit_z"].to_numpy()
    disk = lay["is_disk"]
    expected_type = np.where(disk, "disk", "barrel")
    assert (df["sub_detector_type"].to_numpy() == expected_type).all()
    # Barrel: r on the cylinder, |z| within the half-length.
    np.testing.assert_allclose(r[~disk], lay["surface"][~disk], rtol=0, atol=1e-9)
    assert (np.abs(z[~disk]) <= lay["high"][~disk] + 1e-12).all()
    # Disk: |z| on the disk plane, r between inner and outer radius.
    np.testing.assert_allclose(np.abs(z[disk]), lay["surface"][disk], rtol=0, atol=1e-9)
    assert (r[disk] >= lay["low"][disk] - 1e-12).all()
    assert (r[disk] <= lay["high"][disk] + 1e-12).all()
    theta = df["hit_theta"].to_numpy()
    assert (theta >= -np.pi).all() and (theta < np.pi).all()


@pytest.mark.parametrize("track_type", ["linear", "helical"])
def test_hits_lie_on_their_layer_without_noise(track_type: str) -> None:
    _assert_on_surfaces(_simulate(track_type=track_type, noise_hits_per_event=5))


@pytest.mark.parametrize("track_type", ["linear", "helical"])
def test_smeared_hits_stay_on_layer_within_six_sigma(track_type: str) -> None:
    sigma = 1e-3
    df = _simulate(track_type=track_type, noise_sigma=sigma, random_phi0=True)
    _assert_on_surfaces(df)  # smearing moves hits along the surface only
    a, b, d = (df[c].to_numpy() for c in ("radial_coeff", "pitch_coeff", "azimuthal_coeff"))
    phi0 = df["azimuthal_const"].to_numpy()
    r, z, phi = (df[c].to_numpy() for c in ("hit_r", "hit_z", "hit_theta"))
    lay = _layer_arrays(df)
    disk = lay["is_disk"]
    # Noise-free crossing parameter t: barrel t = R / a, disk t = Z / |b|.
    t = np.where(disk, lay["surface"] / np.abs(np.where(disk, b, 1.0)), lay["surface"] / a)
    r_true = a * t
    assert (np.abs(z - b * t)[~disk] <= 6 * sigma).all()
    assert (np.abs(r - r_true)[disk] <= 6 * sigma).all()
    arc = r_true * np.abs(wrap_angle(phi - phi0 - d * t))
    assert (arc <= 6 * sigma).all()
    assert arc.max() > 0  # the smearing did happen


@pytest.mark.parametrize("random_phi0", [False, True])
def test_helical_hits_follow_the_helix(random_phi0: bool) -> None:
    df = _simulate(track_type="helical", random_phi0=random_phi0)
    a, b, d = (df[c].to_numpy() for c in ("radial_coeff", "pitch_coeff", "azimuthal_coeff"))
    phi0 = df["azimuthal_const"].to_numpy()
    r, z, phi = (df[c].to_numpy() for c in ("hit_r", "hit_z", "hit_theta"))
    assert set(np.unique(d)) == {-1.0, 1.0}
    np.testing.assert_allclose(wrap_angle(phi - phi0 - d * r / a), 0.0, atol=1e-9)
    np.testing.assert_allclose(z, b * r / a, rtol=0, atol=1e-9)
    assert (df["radial_const"] == 0).all() and (df["pitch_const"] == 0).all()
    if random_phi0:
        assert np.unique(phi0).size > 1
    else:
        assert (phi0 == 0).all()
    # The azimuth turns noticeably but not wildly between innermost and outermost barrel.
    turn = (max(GEOMETRY.barrel_radii) - min(GEOMETRY.barrel_radii)) / a
    assert 0.2 <= turn.min() and turn.max() <= 2.0


def test_linear_hits_follow_a_straight_line() -> None:
    df = _simulate(track_type="linear")
    a, b, d = (df[c].to_numpy() for c in ("radial_coeff", "pitch_coeff", "azimuthal_coeff"))
    phi0 = df["azimuthal_const"].to_numpy()
    r, z, phi = (df[c].to_numpy() for c in ("hit_r", "hit_z", "hit_theta"))
    assert (d == 0).all()
    np.testing.assert_allclose(a**2 + b**2, 1.0, atol=1e-12)  # (sin, cos) of theta
    np.testing.assert_allclose(wrap_angle(phi - phi0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z / r, b / a, rtol=1e-9, atol=1e-9)
    assert phi0.min() < -2 and phi0.max() > 2  # azimuth spread over [-pi, pi)


def _tracks_per_event(df: pd.DataFrame) -> pd.Series:
    real = df[df["track_id"] > 0]
    return real.groupby("event_id")["track_id"].nunique()


def test_track_count_configurations() -> None:
    assert parse_track_range("3") == (3, 3)
    assert parse_track_range("1-20") == (1, 20)
    assert parse_track_range("50-100") == (50, 100)
    assert parse_track_range("7-9") == (7, 9)
    for bad in ("", "0", "5-3", "a-b", "3-"):
        with pytest.raises(ValueError):
            parse_track_range(bad)

    counts = _tracks_per_event(_simulate(tracks="3", n_events=30))
    assert len(counts) == 30 and (counts == 3).all()
    counts = _tracks_per_event(_simulate(tracks="10-50", n_events=60))
    assert counts.between(10, 50).all() and counts.nunique() > 1


def test_track_ids_run_from_one_within_each_event() -> None:
    df = _simulate(noise_hits_per_event=3)
    real = df[df["track_id"] > 0]
    per_event = real.groupby("event_id")["track_id"].agg(["min", "max", "nunique"])
    assert (per_event["min"] == 1).all()
    assert (per_event["max"] == per_event["nunique"]).all()


@pytest.mark.parametrize("track_type", ["linear", "helical"])
def test_noise_hits_count_and_labels(track_type: str) -> None:
    df = _simulate(track_type=track_type, noise_hits_per_event=7)
    noise = df[df["track_id"] == 0]
    assert (noise.groupby("event_id").size() == 7).all()
    assert noise["event_id"].nunique() == 40
    coeffs = ["radial_const", "azimuthal_const", "pitch_const"]
    coeffs += ["radial_coeff", "azimuthal_coeff", "pitch_coeff"]
    assert (noise[coeffs] == 0).all().all()
    assert not df.isna().any().any()
    assert noise["sub_detector_id"].nunique() > 1

    # A value in (0, 1) is a fraction of the event's real hits.
    df = _simulate(track_type=track_type, noise_hits_per_event=0.2)
    is_noise = df["track_id"] == 0
    n_noise = is_noise.groupby(df["event_id"]).sum()
    n_real = (~is_noise).groupby(df["event_id"]).sum()
    assert (n_noise == np.rint(0.2 * n_real)).all()


@pytest.mark.parametrize("track_type", ["linear", "helical"])
def test_track_layer_structure(track_type: str) -> None:
    # Wide ranges so that some candidates miss the outermost layer and are redrawn.
    df = _simulate(
        track_type=track_type, tracks="20", pitch_coeff_max=6.0, linear_cos_theta_max=1.0
    )
    real = df[df["track_id"] > 0]
    assert (_tracks_per_event(df) == 20).all()
    keys = ["event_id", "track_id"]
    assert not real.duplicated([*keys, "sub_detector_id"]).any()
    hits = real.groupby(keys).size()
    assert hits.max() <= 9 and GEOMETRY.n_layers == 9
    assert hits.max() > 5 and hits.min() >= 2
    outer = {GEOMETRY.outermost_barrel, GEOMETRY.outermost_disk}
    reached = real["sub_detector_id"].isin(outer).groupby([real[k] for k in keys]).any()
    assert reached.all()
    # Each track goes into one endcap only.
    disk_hits = real[real["sub_detector_type"] == "disk"]
    assert (np.sign(disk_hits["hit_z"]).groupby([disk_hits[k] for k in keys]).nunique() == 1).all()


def test_seeded_reproducible_and_shuffled() -> None:
    first = _simulate(noise_hits_per_event=2)
    pd.testing.assert_frame_equal(first, _simulate(noise_hits_per_event=2))
    other = _simulate(noise_hits_per_event=2, seed=2)
    assert len(first) != len(other) or not first.equals(other)
    assert list(first.columns) == list(REDVID_COLUMNS)

    # hit_id numbers the hits of each event 0..n-1 in file order.
    expected = first.groupby("event_id").cumcount()
    assert (first["hit_id"].to_numpy() == expected.to_numpy()).all()
    # Hits are shuffled: track ids are not sorted within the events.
    unsorted = first.groupby("event_id")["track_id"].apply(lambda s: not s.is_monotonic_increasing)
    assert unsorted.mean() > 0.9


def test_csv_round_trip_and_chunk_independence(tmp_path: Path) -> None:
    config = SimulationConfig(n_events=2100, tracks="3", track_type="linear", seed=5)
    in_memory = simulate_events(config)
    # Chunks of 1500 events are rounded up to whole seed blocks: 2000 + 100 events, the
    # same bounds the file writer uses, and they join up to the in-memory data set.
    chunks = list(iter_event_chunks(config, 1500))
    assert [c["event_id"].nunique() for c in chunks] == [2000, 100]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), in_memory)
    with pytest.raises(ValueError, match="chunk_events must be >= 1"):
        next(iter_event_chunks(config, 0))
    path = generate_dataset(config, tmp_path / "sub" / "lin_3.csv", chunk_events=1000)
    assert [p.name for p in path.parent.iterdir()] == ["lin_3.csv"]  # no temp file left
    assert path.read_text().splitlines()[0] == HEADER
    from_file = pd.read_csv(path, sep=";")
    assert list(from_file.columns) == HEADER.split(";")
    pd.testing.assert_frame_equal(from_file, in_memory, check_dtype=False, check_exact=True)
    assert from_file["event_id"].nunique() == 2100
    # Parallel simulation writes the same bytes.
    parallel = generate_dataset(config, tmp_path / "parallel.csv", chunk_events=1000, jobs=2)
    assert parallel.read_bytes() == path.read_bytes()

    empty = simulate_events(SimulationConfig(n_events=0))
    assert empty.empty and list(empty.columns) == list(REDVID_COLUMNS)

    small = _simulate(n_events=3)
    out = tmp_path / "small.csv"
    write_redvid_csv(small, out)
    back = pd.read_csv(out, sep=";")
    pd.testing.assert_frame_equal(back, small, check_dtype=False, check_exact=True)


def test_cli_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hel_1-20.csv"
    main(
        [
            "--tracks",
            "1-20",
            "--track-type",
            "helical",
            "--events",
            "25",
            "--out",
            str(out),
            "--noise-sigma",
            "0.001",
            "--noise-hits",
            "2",
            "--seed",
            "3",
            "--random-phi0",
            "--no-progress",
        ]
    )
    df = pd.read_csv(out, sep=";")
    assert list(df.columns) == HEADER.split(";")
    assert df["event_id"].nunique() == 25
    assert ((df["track_id"] == 0).groupby(df["event_id"]).sum() == 2).all()
    printed = capsys.readouterr().out
    assert "tracks: 1-20" in printed and "wrote 25 events" in printed and str(out) in printed


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(track_type="curly")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimulationConfig(tracks="ten")
    with pytest.raises(ValueError):
        SimulationConfig(noise_sigma=-1.0)


def test_cli_underscore_flags_write_the_same_file_as_the_hyphenated_ones(tmp_path: Path) -> None:
    common = ["--tracks", "1-20", "--events", "30", "--seed", "5"]
    hyphen = [
        "--track-type", "linear", "--noise-hits", "2", "--first-event-id", "4",
        "--chunk-events", "7", "--no-progress",
    ]  # fmt: skip
    underscore = ["--" + f[2:].replace("-", "_") if f.startswith("--") else f for f in hyphen]
    assert underscore[0] == "--track_type"
    main([*common, *hyphen, "--out", str(tmp_path / "a.csv")])
    main([*common, *underscore, "--out", str(tmp_path / "b.csv")])
    written = (tmp_path / "a.csv").read_bytes()
    assert written == (tmp_path / "b.csv").read_bytes()
    assert pd.read_csv(tmp_path / "a.csv", sep=";")["event_id"].min() == 4


def test_cli_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--events", "-3", "--out", "unused.csv", "--no_progress"])
    assert exit_info.value.code == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert err == "error: n_events must be >= 0, got -3\n"
    with pytest.raises(UserError, match="n_events must be >= 0"):
        SimulationConfig(n_events=-3)
