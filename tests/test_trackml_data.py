"""Tests for data_processing.trackml_data on the real TrackML sample (5,527 hits).

Facts about the sample are from ../shared/data/trackml_sample/PROVENANCE.md.
"""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_processing.errors import USER_ERROR_EXIT, run_cli
from data_processing.hit_table import (
    HIT_TABLE_COLUMNS,
    HIT_TABLE_DTYPES,
    INPUT_COLUMNS,
    PIXEL_VOLUMES,
    TARGET_COLUMNS,
    read_hit_table,
    write_hit_table,
)
from data_processing.redvid import parse_track_range
from data_processing.trackml_data import (
    SubEventConfig,
    _build_parser,
    _parse_range,
    build_sub_events,
    convert_events,
    main,
)
from data_processing.trackml_events import TrackMLEvent, list_events, read_event
from evaluation.scoring import score_event

N_HITS = 5527
N_PARTICLES = 548
N_PARTICLES_WITH_HITS = 468
N_NOISE = 829
WEIGHT_SUM = 0.0512628
N_PIXEL_PARTICLES = 418  # particles with >= 1 hit in volumes 7/8/9 (our count)
N_PIXEL_NOISE = 152


@pytest.fixture(scope="module")
def event(trackml_sample_dir: Path) -> TrackMLEvent:
    return read_event(trackml_sample_dir / "event000000001")


@pytest.fixture(scope="module")
def truth_hits(event: TrackMLEvent) -> pd.DataFrame:
    """hits joined with truth: one row per original hit."""
    return event.hits.merge(event.truth, on="hit_id", validate="one_to_one")


def _copy_event(src_dir: Path, dst_dir: Path, prefix: str = "event000000001") -> Path:
    """Copy hits/truth/particles of one event (no cells) to dst_dir; return the new prefix."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for kind in ("hits", "truth", "particles"):
        shutil.copy(src_dir / f"event000000001-{kind}.csv.gz", dst_dir / f"{prefix}-{kind}.csv.gz")
    return dst_dir / prefix


def _rewrite(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False)


def _chosen_particles(table: pd.DataFrame) -> pd.Series:
    """Number of distinct (non-noise) particles per sub-event."""
    return table.loc[table["particle_id"] != 0].groupby("event_id")["particle_id"].nunique()


# ---------------------------------------------------------------- reading


def test_read_sample_event(event: TrackMLEvent) -> None:
    assert event.event_id == 1
    assert len(event.hits) == len(event.truth) == N_HITS
    assert len(event.particles) == N_PARTICLES
    assert "particle_type" in event.particles.columns  # Codalab column set
    pid = event.truth["particle_id"]
    assert pid[pid != 0].nunique() == N_PARTICLES_WITH_HITS
    assert int((pid == 0).sum()) == N_NOISE
    assert event.truth["weight"].sum() == pytest.approx(WEIGHT_SUM, rel=1e-6)
    assert event.hits["x"].dtype == np.float64 and event.hits["hit_id"].dtype == np.int64


def test_read_event_from_file_path(trackml_sample_dir: Path, event: TrackMLEvent) -> None:
    again = read_event(trackml_sample_dir / "event000000001-truth.csv.gz")
    pd.testing.assert_frame_equal(again.hits, event.hits)


def test_read_tiny_event_with_nonstandard_prefix(trackml_sample_dir: Path) -> None:
    tiny = read_event(trackml_sample_dir / "tiny_37hits" / "test_001")
    assert tiny.event_id == 1
    assert len(tiny.hits) == 37 and len(tiny.particles) == 3
    assert int((tiny.truth["particle_id"] == 0).sum()) == 5
    # Not listed: the prefix does not follow event + digits.
    assert list_events(trackml_sample_dir / "tiny_37hits") == []


def test_list_events_sorted_by_number(trackml_sample_dir: Path, tmp_path: Path) -> None:
    assert list_events(trackml_sample_dir) == [trackml_sample_dir / "event000000001"]
    for number in (10, 2, 1000):
        _copy_event(trackml_sample_dir, tmp_path, f"event{number:09d}")
    # A plain .csv duplicate of an event must not list it twice.
    (tmp_path / "event000000002-hits.csv").write_text("hit_id\n")
    names = [p.name for p in list_events(tmp_path)]
    assert names == ["event000000002", "event000000010", "event000001000"]


def test_kaggle_columns_and_plain_csv(trackml_sample_dir: Path, tmp_path: Path) -> None:
    for kind in ("hits", "truth", "particles"):
        frame = pd.read_csv(trackml_sample_dir / f"event000000001-{kind}.csv.gz")
        if kind == "particles":
            frame = frame.drop(columns="particle_type")  # the Kaggle particles file
        _rewrite(tmp_path / f"event000000007-{kind}.csv", frame)
    kaggle = read_event(tmp_path / "event000000007")
    assert kaggle.event_id == 7
    assert "particle_type" not in kaggle.particles.columns
    table = build_sub_events(kaggle, SubEventConfig((5, 10), 3))
    assert _chosen_particles(table).between(5, 10).all()


def test_missing_file(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    (tmp_path / "event000000001-truth.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="truth"):
        read_event(prefix)


def test_missing_column(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    path = tmp_path / "event000000001-truth.csv.gz"
    _rewrite(path, pd.read_csv(path).drop(columns="weight"))
    with pytest.raises(ValueError, match=r"event000000001-truth\.csv\.gz.*weight"):
        read_event(prefix)


def test_nan_coordinate(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    path = tmp_path / "event000000001-hits.csv.gz"
    hits = pd.read_csv(path)
    hits.loc[3, "y"] = np.nan
    _rewrite(path, hits)
    with pytest.raises(ValueError, match=r"hits\.csv\.gz: column y has 1 NaN"):
        read_event(prefix)


def test_non_numeric_column(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    path = tmp_path / "event000000001-particles.csv.gz"
    particles = pd.read_csv(path).astype({"q": "object"})
    particles.loc[0, "q"] = "plus"
    _rewrite(path, particles)
    with pytest.raises(ValueError, match=r"particles\.csv\.gz: column q is not numeric"):
        read_event(prefix)


def test_binary_or_corrupt_files_name_the_file(trackml_sample_dir: Path, tmp_path: Path) -> None:
    # A parquet file where a CSV is expected: not UTF-8 text.
    prefix = _copy_event(trackml_sample_dir, tmp_path / "parquet")
    hits = tmp_path / "parquet" / "event000000001-hits.csv.gz"
    pd.read_csv(hits).to_parquet(hits.with_suffix(""))
    hits.unlink()
    with pytest.raises(ValueError, match=r"event000000001-hits\.csv: not a readable hits CSV"):
        read_event(prefix)
    # A truncated gzip file, as an interrupted download leaves it.
    prefix = _copy_event(trackml_sample_dir, tmp_path / "truncated")
    truth = tmp_path / "truncated" / "event000000001-truth.csv.gz"
    truth.write_bytes(truth.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truth\.csv\.gz: not a readable truth CSV file"):
        read_event(prefix)


def test_hits_without_truth(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    path = tmp_path / "event000000001-truth.csv.gz"
    _rewrite(path, pd.read_csv(path).iloc[1:])
    with pytest.raises(ValueError, match=r"1 hit.* without truth rows"):
        read_event(prefix)


def test_truth_particle_missing_from_particles(trackml_sample_dir: Path, tmp_path: Path) -> None:
    prefix = _copy_event(trackml_sample_dir, tmp_path)
    path = tmp_path / "event000000001-particles.csv.gz"
    particles = pd.read_csv(path)
    _rewrite(path, particles.drop(index=particles.index[particles["nhits"] > 0][0]))
    with pytest.raises(ValueError, match="absent from"):
        read_event(prefix)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"particles": (0, 5)},
        {"particles": (6, 5)},
        {"particles": (1.5, 5)},
        {"sub_events_per_event": 0},
        {"min_hits": 0},
        {"seed": -1},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SubEventConfig(**kwargs)


# ---------------------------------------------------------------- sub-events


def test_sub_event_contract_and_counts(event: TrackMLEvent) -> None:
    table = build_sub_events(event, SubEventConfig((10, 50), 20, seed=3), first_event_id=100)
    assert tuple(table.columns) == HIT_TABLE_COLUMNS
    assert {c: str(t) for c, t in table.dtypes.items()} == dict(HIT_TABLE_DTYPES)
    assert set(INPUT_COLUMNS) | set(TARGET_COLUMNS) <= set(table.columns)
    assert sorted(table["event_id"].unique()) == list(range(100, 120))
    assert table["event_id"].is_monotonic_increasing
    assert _chosen_particles(table).between(10, 50).all()
    assert (table["particle_id"] != 0).all()  # keep_noise is off
    assert (table["source_event"] == 1).all()
    assert not table.duplicated(["event_id", "hit_id"]).any()


def test_hit_completeness_weights_and_coordinates(
    event: TrackMLEvent, truth_hits: pd.DataFrame
) -> None:
    table = build_sub_events(event, SubEventConfig((10, 50), 20, seed=4))
    joined = table.merge(truth_hits, on="hit_id", suffixes=("", "_orig"), validate="many_to_one")
    assert len(joined) == len(table)
    assert (joined["particle_id"] == joined["particle_id_orig"]).all()
    np.testing.assert_array_equal(table["weight"], joined["weight_orig"].astype(np.float32))
    for c in INPUT_COLUMNS:
        np.testing.assert_array_equal(table[c], joined[f"{c}_orig"].astype(np.float32))
    # Hit ids are a subset of each particle's truth hits (above) with no repeats, and the
    # counts match the truth counts, so every hit of a chosen particle is present.
    kept = table.groupby(["event_id", "particle_id"]).size()
    truth_counts = truth_hits.groupby("particle_id").size()
    np.testing.assert_array_equal(
        kept.to_numpy(), truth_counts.loc[kept.index.get_level_values("particle_id")].to_numpy()
    )


def test_targets(event: TrackMLEvent) -> None:
    table = build_sub_events(event, SubEventConfig((10, 50), 10, keep_noise=True, seed=5))
    signal = table[table["particle_id"] != 0]
    assert set(np.unique(signal["q"])) <= {-1.0, 1.0}
    np.testing.assert_allclose(signal["sin_phi"] ** 2 + signal["cos_phi"] ** 2, 1.0, atol=1e-6)
    assert signal["theta"].between(0, np.pi).all()
    # Independent recomputation from the raw momenta of the particles table.
    ref = signal.merge(event.particles, on="particle_id", suffixes=("", "_p"))
    p = np.sqrt(ref["px"] ** 2 + ref["py"] ** 2 + ref["pz"] ** 2)
    np.testing.assert_allclose(ref["theta"], np.arccos(ref["pz"] / p), atol=1e-6)
    phi = np.arctan2(ref["py"], ref["px"])
    np.testing.assert_allclose(ref["sin_phi"], np.sin(phi), atol=1e-6)
    np.testing.assert_allclose(ref["cos_phi"], np.cos(phi), atol=1e-6)
    np.testing.assert_array_equal(ref["q"], ref["q_p"].astype(np.float32))
    np.testing.assert_allclose(ref["pt"], np.hypot(ref["px"], ref["py"]), rtol=1e-6)
    eta = -np.log(np.tan(ref["theta"].astype(np.float64) / 2))
    np.testing.assert_allclose(ref["eta"], eta, rtol=1e-4, atol=1e-4)
    noise = table[table["particle_id"] == 0]
    assert len(noise) > 0
    assert noise[[*TARGET_COLUMNS, "pt", "eta"]].isna().all().all()


def test_reproducible_by_seed(event: TrackMLEvent) -> None:
    config = SubEventConfig((10, 50), 10, keep_noise=True, seed=11)
    first = build_sub_events(event, config)
    pd.testing.assert_frame_equal(first, build_sub_events(event, config))
    # The stream depends on (seed, event number), not on the sub-event id offset.
    shifted = build_sub_events(event, config, first_event_id=500)
    pd.testing.assert_frame_equal(first.drop(columns="event_id"), shifted.drop(columns="event_id"))
    other = build_sub_events(event, SubEventConfig((10, 50), 10, keep_noise=True, seed=12))
    assert not first.equals(other)


def test_sub_events_are_independent_not_nested(event: TrackMLEvent) -> None:
    table = build_sub_events(event, SubEventConfig((30, 30), 10, seed=0))
    sets = [frozenset(g) for _, g in table.groupby("event_id")["particle_id"]]
    assert all(len(s) == 30 for s in sets)
    assert len(set(sets)) == len(sets)  # nested prefixes would all be equal
    # Different sizes: prefixes would make the smaller set a subset of the larger one.
    table = build_sub_events(event, SubEventConfig((10, 50), 10, seed=0))
    sets = sorted((frozenset(g) for _, g in table.groupby("event_id")["particle_id"]), key=len)
    assert not all(a <= b for a, b in itertools.pairwise(sets))


def test_capping_warns_and_takes_all(event: TrackMLEvent) -> None:
    with pytest.warns(UserWarning, match=r"event000000001: 4 of 4 sub-event.*capped to 468"):
        table = build_sub_events(event, SubEventConfig((469, 600), 4))
    assert (_chosen_particles(table) == N_PARTICLES_WITH_HITS).all()
    assert (table.groupby("event_id").size() == N_HITS - N_NOISE).all()


def test_all_particles_is_the_capped_draw_without_warning(event: TrackMLEvent) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = build_sub_events(event, SubEventConfig((10, 50), 2, all_particles=True))
    assert (_chosen_particles(table) == N_PARTICLES_WITH_HITS).all()
    assert (table.groupby("event_id").size() == N_HITS - N_NOISE).all()
    with pytest.warns(UserWarning, match="capped"):
        capped = build_sub_events(event, SubEventConfig((100_000, 100_000), 2))
    pd.testing.assert_frame_equal(table, capped)
    # keep_noise keeps every noise hit then: the whole event.
    noisy = build_sub_events(event, SubEventConfig(all_particles=True, keep_noise=True))
    assert (noisy.groupby("event_id").size() == N_HITS).all()


def test_keep_noise_share(event: TrackMLEvent, truth_hits: pd.DataFrame) -> None:
    table = build_sub_events(event, SubEventConfig((10, 200), 10, keep_noise=True, seed=2))
    n_particles = _chosen_particles(table)
    n_noise = table[table["particle_id"] == 0].groupby("event_id").size()
    expected = np.rint(N_NOISE * n_particles / N_PARTICLES_WITH_HITS)
    np.testing.assert_array_equal(n_noise.loc[expected.index], expected)
    noise_ids = set(truth_hits.loc[truth_hits["particle_id"] == 0, "hit_id"])
    assert set(table.loc[table["particle_id"] == 0, "hit_id"]) <= noise_ids
    # Different sub-events draw different noise hits.
    noise_sets = [set(g) for _, g in table[table["particle_id"] == 0].groupby("event_id")["hit_id"]]
    assert len({frozenset(n) for n in noise_sets}) == len(noise_sets)


def test_pixel_only(event: TrackMLEvent, truth_hits: pd.DataFrame) -> None:
    config = SubEventConfig((469, 600), 2, keep_noise=True, pixel_only=True)
    with pytest.warns(UserWarning, match=f"capped to {N_PIXEL_PARTICLES}"):
        table = build_sub_events(event, config)
    assert set(np.unique(table["volume_id"])) <= set(PIXEL_VOLUMES)
    pixel = truth_hits[truth_hits["volume_id"].isin(PIXEL_VOLUMES)]
    # Everything in the pixel volumes is taken: all particles' pixel hits and all noise.
    for _, sub in table.groupby("event_id"):
        assert set(sub["hit_id"]) == set(pixel["hit_id"])
    assert int((table["particle_id"] == 0).sum()) == 2 * N_PIXEL_NOISE


def test_min_hits(event: TrackMLEvent, truth_hits: pd.DataFrame) -> None:
    table = build_sub_events(event, SubEventConfig((10, 20), 5, min_hits=12, seed=1))
    assert (table.groupby(["event_id", "particle_id"]).size() >= 12).all()
    assert _chosen_particles(table).between(10, 20).all()


def test_no_eligible_particles(trackml_sample_dir: Path) -> None:
    tiny = read_event(trackml_sample_dir / "tiny_37hits" / "test_001")
    with pytest.raises(ValueError, match="test_001: no eligible particles"):
        build_sub_events(tiny, SubEventConfig((1, 2), 1, min_hits=100))


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_convert_round_trip(
    event: TrackMLEvent, trackml_sample_dir: Path, tmp_path: Path, suffix: str
) -> None:
    config = SubEventConfig((10, 50), 5, keep_noise=True, seed=7)
    out = tmp_path / "sets" / f"tml{suffix}"
    summary = convert_events(trackml_sample_dir, out, config)
    expected = build_sub_events(event, config)
    table = read_hit_table(out)
    pd.testing.assert_frame_equal(table, expected)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left
    assert summary["events"] == 1 and summary["sub_events"] == 5
    assert summary["hits"] == len(expected)
    assert summary["noise_hits"] == int((expected["particle_id"] == 0).sum())
    assert summary["particles"] == int(_chosen_particles(expected).sum())
    assert summary["hits_per_second"] > 0


def test_convert_several_events_unique_ids(trackml_sample_dir: Path, tmp_path: Path) -> None:
    for number in (3, 4):
        _copy_event(trackml_sample_dir, tmp_path / "in", f"event{number:09d}")
    out = tmp_path / "two.parquet"
    convert_events(tmp_path / "in", out, SubEventConfig((5, 8), 3))
    table = read_hit_table(out)
    assert sorted(table["event_id"].unique()) == list(range(6))
    assert table.groupby("event_id")["source_event"].first().tolist() == [3, 3, 3, 4, 4, 4]


def test_failed_conversion_leaves_nothing(trackml_sample_dir: Path, tmp_path: Path) -> None:
    tiny = trackml_sample_dir / "tiny_37hits" / "test_001"
    with pytest.raises(ValueError, match="no eligible"):
        convert_events([tiny], tmp_path / "x.parquet", SubEventConfig((1, 2), 1, min_hits=99))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unsupported"):
        convert_events([tiny], tmp_path / "x.json", SubEventConfig())


def test_read_hit_table_sorts_stably(event: TrackMLEvent, tmp_path: Path) -> None:
    table = build_sub_events(event, SubEventConfig((3, 5), 4))
    shuffled = pd.concat([table[table["event_id"] == k] for k in (2, 0, 3, 1)])
    write_hit_table(shuffled, tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(read_hit_table(tmp_path / "s.parquet"), table)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="cos_phi"), "missing hit table column.*cos_phi"),
        (lambda t: t.assign(z=t["z"].where(t.index != 2)), "column z has 1 NaN"),
        (
            lambda t: t.assign(theta=t["theta"].where(t.index != 0)),
            r"theta is NaN on 1 hit\(s\) of particles",
        ),
        (lambda t: t.assign(q=t["q"] * 2), "q holds values other than"),
        (lambda t: pd.concat([t, t.head(1)]), "repeated within a sub-event"),
    ],
)
def test_read_hit_table_errors(event: TrackMLEvent, tmp_path: Path, change, message) -> None:
    table = build_sub_events(event, SubEventConfig((3, 5), 2))
    path = tmp_path / "bad.csv.gz"
    change(table).to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"bad.csv.gz: .*{message}"):
        read_hit_table(path)


def test_read_hit_table_binary_csv(event: TrackMLEvent, tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    build_sub_events(event, SubEventConfig((3, 5), 2)).to_parquet(path)
    with pytest.raises(ValueError, match=r"table\.csv: not a readable csv hit table"):
        read_hit_table(path)
    (tmp_path / "table.parquet").write_text("event_id,hit_id\n1,2\n")
    with pytest.raises(ValueError, match=r"table\.parquet: not a readable parquet hit table"):
        read_hit_table(tmp_path / "table.parquet")


def test_read_hit_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        read_hit_table(tmp_path / "nope.parquet")


def test_cli(trackml_sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.parquet"
    main(
        [
            str(trackml_sample_dir),
            "--particles",
            "5-10",
            "--sub-events",
            "3",
            "--out",
            str(out),
            "--keep-noise",
            "--pixel-only",
            "--seed",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert "SubEventConfig(particles=(5, 10)" in printed and "hits/s" in printed
    table = read_hit_table(out)
    assert table["event_id"].nunique() == 3
    assert set(np.unique(table["volume_id"])) <= set(PIXEL_VOLUMES)


def test_cli_all_particles(
    trackml_sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "full.parquet"
    main([str(trackml_sample_dir), "--particles", "all", "--sub_events", "1", "--out", str(out)])
    assert "all_particles=True" in capsys.readouterr().out
    table = read_hit_table(out)
    assert table.loc[table["particle_id"] != 0, "particle_id"].nunique() == N_PARTICLES_WITH_HITS


def test_cli_particle_range_is_parsed_like_track_counts(capsys: pytest.CaptureFixture) -> None:
    assert _parse_range(" 10 - 50 ") == parse_track_range(" 10 - 50 ") == (10, 50)
    assert _parse_range("20") == (20, 20)
    assert _parse_range(" All ") is None  # every particle
    for bad in ("0-5", "9-3", "ten"):
        with pytest.raises(SystemExit):
            main(["in", "--out", "x.parquet", "--particles", bad])
        # argparse shows the parser's own message, not just "invalid value".
        assert "particles per sub-event" in capsys.readouterr().err


# ---------------------------------------------------------------- scoring


def test_truth_as_submission_scores_one(event: TrackMLEvent) -> None:
    truth = event.truth[["hit_id", "particle_id", "weight"]]
    submission = truth.rename(columns={"particle_id": "track_id"})[["hit_id", "track_id"]]
    assert score_event(truth, submission) == 1.0
    table = build_sub_events(event, SubEventConfig((10, 50), 3, keep_noise=True))
    for _, sub in table.groupby("event_id"):
        sub_truth = sub[["hit_id", "particle_id", "weight"]]
        sub_submission = sub_truth.rename(columns={"particle_id": "track_id"})
        score = score_event(sub_truth, sub_submission[["hit_id", "track_id"]])
        assert score == 1.0


# ---------------------------------------------------------------- full events


@pytest.mark.requiresdata
def test_full_event_from_env() -> None:
    directory = os.environ.get("TRACKML_DATA_DIR")
    if not directory or not Path(directory).is_dir():
        pytest.skip("set TRACKML_DATA_DIR to a directory of full TrackML events")
    prefixes = list_events(directory)
    if not prefixes:
        pytest.skip(f"no eventNNNNNNNNN-hits.csv[.gz] files in {directory}")
    full = read_event(prefixes[0])
    config = SubEventConfig((200, 500), 5, keep_noise=True, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a full event has thousands of particles: no capping
        table = build_sub_events(full, config)
    assert _chosen_particles(table).between(200, 500).all()
    merged = table.merge(full.truth, on="hit_id", suffixes=("", "_t"))
    assert (merged["particle_id"] == merged["particle_id_t"]).all()
    kept = table[table["particle_id"] != 0].groupby(["event_id", "particle_id"]).size()
    truth_counts = full.truth.groupby("particle_id").size()
    np.testing.assert_array_equal(
        kept.to_numpy(), truth_counts.loc[kept.index.get_level_values("particle_id")].to_numpy()
    )


def test_cli_underscore_flags_and_hyphenated_aliases_mean_the_same() -> None:
    parser = _build_parser()
    hyphen = ["in", "--out", "x.parquet", "--sub-events", "3", "--keep-noise", "--pixel-only"]
    underscore = ["in", "--out", "x.parquet", "--sub_events", "3", "--keep_noise", "--pixel_only"]
    parsed = parser.parse_args([*hyphen, "--min-hits", "2"])
    assert parsed == parser.parse_args([*underscore, "--min_hits", "2"])
    assert (parsed.sub_events, parsed.keep_noise, parsed.pixel_only, parsed.min_hits) == (
        3, True, True, 2,
    )  # fmt: skip


def test_cli_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "event000000042"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(missing), "--out", str(tmp_path / "o.parquet")])
    assert exit_info.value.code == USER_ERROR_EXIT
    # The last stderr line (the progress bar writes there too) is the error, naming the file.
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: TrackML event {missing}: hits file missing")
    with pytest.raises(SystemExit):
        run_cli(main, [str(tmp_path), "--out", str(tmp_path / "o.txt")])
    assert "unsupported hit table format" in capsys.readouterr().err
