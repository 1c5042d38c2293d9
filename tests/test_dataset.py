"""REDVID loading, validation errors, splitting, normalisation, batching, and the atomic
writing shared by every data and checkpoint writer."""

from __future__ import annotations

import os
import stat
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from checkpoint import save_checkpoint
from data_processing import data_files, redvid
from data_processing.batching import DeviceEvents, batch_event_indices, padded_batch
from data_processing.common import atomic_write
from data_processing.data_types import DATA_TYPES, data_type_named
from data_processing.dataset import EventSet, Normaliser, load_events, read_rows, split_events
from data_processing.derived_data import write_derived_rows
from data_processing.errors import UserError
from data_processing.hit_table import (
    HIT_TABLE_COLUMNS,
    HIT_TABLE_DTYPES,
    read_hit_table,
    write_hit_table,
)
from data_processing.redvid import SimulationConfig, generate_dataset
from data_processing.redvid_format import REDVID_COLUMNS


def _redvid_rows() -> pd.DataFrame:
    """Two events: event 7 with tracks 1, 2 and a noise hit; event 9 with track 1."""
    rows = [
        # event, track, phi0, a, d, b, hit_id, r, azimuth, z
        (7, 1, 0.5, 0.6, 0.0, 0.8, 0, 1.0, 0.5, 1.0 / 0.6 * 0.8),
        (7, 2, -2.0, 1.0, 0.0, 0.0, 1, 1.0, -2.0, 0.0),
        (7, 1, 0.5, 0.6, 0.0, 0.8, 2, 2.0, 0.5, 2.0 / 0.6 * 0.8),
        (7, 0, 0.0, 0.0, 0.0, 0.0, 3, 1.5, 3.0, 0.3),
        (9, 1, 3.0, 0.8, 0.0, -0.6, 0, 1.0, 3.0, -0.75),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "event_id",
            "track_id",
            "azimuthal_const",
            "radial_coeff",
            "azimuthal_coeff",
            "pitch_coeff",
            "hit_id",
            "hit_r",
            "hit_theta",
            "hit_z",
        ],
    )
    frame["sub_detector_id"] = 0
    frame["sub_detector_type"] = "barrel"
    frame["track_type"] = "linear"
    frame["radial_const"] = 0.0
    frame["pitch_const"] = 0.0
    return frame[list(REDVID_COLUMNS)]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, sep=";", index=False)
    return path


def test_redvid_round_trip_inputs_and_targets(tmp_path: Path) -> None:
    path = _write(_redvid_rows(), tmp_path / "lin.csv")
    events = load_events(path, "linear")
    assert events.n_events == 2 and events.n_hits == 5
    assert events.event_id.tolist() == [7, 9]
    assert events.sizes.tolist() == [4, 1]
    assert events.input_names == ("x", "y", "z")
    assert events.target_names == ("theta", "sin_phi", "cos_phi")
    # First hit: r = 1 at azimuth 0.5 -> (cos 0.5, sin 0.5, z).
    np.testing.assert_allclose(events.inputs[0], [np.cos(0.5), np.sin(0.5), 0.8 / 0.6], rtol=1e-6)
    # theta = atan2(a, b) = atan2(0.6, 0.8); phi = phi0 = 0.5.
    np.testing.assert_allclose(
        events.targets[0], [np.arctan2(0.6, 0.8), np.sin(0.5), np.cos(0.5)], rtol=1e-6
    )
    # Noise hit: particle 0, weight 0, zero target.
    assert events.particle_id[3] == 0 and events.weight[3] == 0.0
    assert events.targets[3].tolist() == [0.0, 0.0, 0.0]
    assert events.weight[events.particle_id > 0].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_published_linear_direction_columns(tmp_path: Path) -> None:
    frame = _redvid_rows().drop(columns=["radial_coeff", "pitch_coeff", "azimuthal_coeff"])
    frame["theta_d"] = frame["azimuthal_const"]
    frame["r_d"] = 0.6
    frame["z_d"] = 0.8
    events = load_events(_write(frame, tmp_path / "pub.csv"), "linear")
    np.testing.assert_allclose(events.targets[0, 0], np.arctan2(0.6, 0.8), rtol=1e-6)


def test_helical_targets_and_random_phi0(tmp_path: Path) -> None:
    frame = _redvid_rows().assign(track_type="helical")
    frame["azimuthal_coeff"] = np.where(frame["track_id"] > 0, 1.0, 0.0)
    events = load_events(_write(frame, tmp_path / "hel.csv"), "helical")
    # azimuthal_const is non-zero, so sin/cos of phi0 join (a, b, d).
    assert events.target_names == (
        "radial_coeff",
        "pitch_coeff",
        "azimuthal_coeff",
        "sin_phi0",
        "cos_phi0",
    )
    frame["azimuthal_const"] = 0.0
    events = load_events(_write(frame, tmp_path / "hel0.csv"), "helical")
    assert events.target_names == ("radial_coeff", "pitch_coeff", "azimuthal_coeff")
    np.testing.assert_allclose(events.targets[0], [0.6, 0.8, 1.0])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["hit_z"]), "missing column"),
        (lambda f: f.assign(hit_r=[1.0, np.nan, 2.0, 1.5, 1.0]), "'hit_r' has 1 NaN"),
        (lambda f: f.iloc[:0], "no hits"),
        (lambda f: f.assign(hit_id=[0, 0, 2, 3, 0]), "hit_id 0 appears twice in event 7"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    path = _write(mutate(_redvid_rows()), tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=message) as info:
        load_events(path, "linear")
    assert "bad.csv" in str(info.value)


def test_empty_and_foreign_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: file is empty"):
        load_events(empty, "linear")
    foreign = tmp_path / "comma.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not a ';'-separated REDVID file"):
        load_events(foreign, "linear")
    with pytest.raises(FileNotFoundError, match=r"nothere\.csv"):
        load_events(tmp_path / "nothere.csv", "linear")


def test_track_type_must_match_the_requested_data_type(tmp_path: Path) -> None:
    linear = _write(_redvid_rows(), tmp_path / "lin.csv")
    with pytest.raises(
        ValueError, match=r"lin\.csv: read as 'helical'.*\['linear'\].*event\(s\) \[7"
    ):
        load_events(linear, "helical")
    # Event 9 alone is helical: the message names it as the first event that differs.
    mixed = _redvid_rows()
    mixed.loc[mixed["event_id"] == 9, "track_type"] = "helical"
    with pytest.raises(
        ValueError, match=r"\['helical'\] on 1 track hit\(s\), first in event\(s\) \[9\]"
    ):
        load_events(_write(mixed, tmp_path / "mixed.csv"), "linear")
    # Noise hits carry no track: their track_type is not checked. REDVID's own name of
    # the helix model is accepted as helical.
    helical = _redvid_rows().assign(track_type="helical_expanding")
    helical.loc[helical["track_id"] == 0, "track_type"] = "linear"
    assert load_events(_write(helical, tmp_path / "hel.csv"), "helical").n_hits == 5
    # Files without the column (other REDVID variants) load as before.
    bare = _redvid_rows().drop(columns="track_type")
    assert load_events(_write(bare, tmp_path / "bare.csv"), "linear").n_hits == 5


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        # An empty hit_id cell would become INT64_MIN if cast unchecked.
        ("hit_id", [0, 1, None, 3, 0], r"'hit_id' has 1 NaN/inf value\(s\), .*\[7\] \(line 4\)"),
        # 0.5 would be truncated into event 0 and 1.5 into track 1.
        ("event_id", [7, 7, 7, 7, 0.5], r"'event_id' must hold whole numbers .* 0\.5, .*line 6"),
        ("track_id", [1, 2, 1.5, 0, 1], r"'track_id' must hold whole numbers .* 1\.5, .*\[7\]"),
        ("hit_z", [0.1, 0.2, "abc", 0.3, 0.4], r"'hit_z' has 1 non-numeric .* 'abc', .*\[7\]"),
        ("event_id", [7, 7, 7, 7, "x9"], r"'event_id' has 1 non-numeric .* 'x9', .*line 6"),
    ],
)
def test_bad_cells_name_file_column_and_event(
    tmp_path: Path, column: str, values: list, message: str
) -> None:
    path = _write(_redvid_rows().assign(**{column: values}), tmp_path / "cells.csv")
    with pytest.raises(ValueError, match=message) as info:
        load_events(path, "linear")
    assert str(info.value).startswith(str(path))


def test_whole_number_floats_are_accepted_as_ids(tmp_path: Path) -> None:
    frame = _redvid_rows()
    frame["event_id"] = frame["event_id"].astype(float)  # written as 7.0, 9.0
    events = load_events(_write(frame, tmp_path / "floats.csv"), "linear")
    assert events.event_id.tolist() == [7, 9] and events.event_id.dtype == np.int64


def test_binary_file_read_as_csv_names_the_file(tmp_path: Path) -> None:
    parquet = tmp_path / "data.csv"
    _redvid_rows().to_parquet(parquet)
    with pytest.raises(ValueError, match=r"data\.csv: not a readable ';'-separated REDVID CSV"):
        load_events(parquet, "linear")
    rows_path = tmp_path / "rows.csv"
    rows_path.write_bytes(b"\xff\xfe\x00binary;\x80\x81\n")
    with pytest.raises(ValueError, match=r"rows\.csv: not a readable"):
        read_rows(rows_path, "helical")


def test_event_larger_than_max_nr_hits(tmp_path: Path) -> None:
    path = _write(_redvid_rows(), tmp_path / "big.csv")
    with pytest.raises(ValueError, match="event 7 with 4 hits"):
        load_events(path, "linear", max_nr_hits=3)


def test_split_is_70_15_15_disjoint_and_seeded() -> None:
    train, val, test = split_events(1000, seed=3)
    assert (len(train), len(val), len(test)) == (700, 150, 150)
    assert len(np.union1d(np.union1d(train, val), test)) == 1000
    again = split_events(1000, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test), strict=True))
    assert not np.array_equal(split_events(1000, seed=4)[0], train)


def _random_events(n_events: int, seed: int = 0) -> EventSet:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_events)
    event = np.repeat(np.arange(n_events), sizes)
    table = pd.DataFrame(
        {
            "event_id": event,
            "hit_id": np.concatenate([np.arange(s) for s in sizes]),
            "particle_id": rng.integers(0, 4, len(event)),
            "weight": 1.0,
            "x": rng.normal(5, 2, len(event)),
            "y": rng.normal(-1, 3, len(event)),
            "z": rng.normal(0, 10, len(event)),
            "t": rng.normal(2, 0.5, len(event)),
        }
    )
    return EventSet.from_table(table, ("x", "y", "z"), ("t",))


def test_normaliser_uses_given_split_only_and_round_trips() -> None:
    events = _random_events(50)
    train = events.subset(np.arange(25))
    norm = Normaliser.fit(train)
    np.testing.assert_allclose(norm.input_mean, train.inputs.mean(axis=0), rtol=1e-5)
    track_targets = train.targets[train.particle_id > 0]
    np.testing.assert_allclose(norm.target_std, track_targets.std(axis=0), rtol=1e-5)
    restored = Normaliser.from_dict(norm.to_dict())
    y = norm.normalise_targets(events.targets)
    np.testing.assert_allclose(restored.denormalise_targets(y), events.targets, atol=1e-5)


def test_subset_gathers_the_right_hits() -> None:
    events = _random_events(20)
    picked = events.subset(np.array([5, 2]))
    assert picked.event_id.tolist() == [5, 2]
    a, b = events.offsets[5], events.offsets[6]
    np.testing.assert_array_equal(picked.inputs[: b - a], events.inputs[a:b])
    assert picked.sizes.tolist() == [events.sizes[5], events.sizes[2]]


def test_padded_batch_layout() -> None:
    events = _random_events(10)
    norm = Normaliser.fit(events)
    data = DeviceEvents.from_events(events, norm)
    index = torch.tensor([3, 0, 7])
    batch = padded_batch(data, index)
    sizes = events.sizes[[3, 0, 7]]
    assert batch.x.shape == (3, sizes.max(), 3)
    assert (~batch.layout.pad_mask).sum(dim=1).tolist() == sizes.tolist()
    real = batch.rows >= 0
    np.testing.assert_allclose(batch.x[real].numpy(), data.inputs[batch.rows[real]].numpy())
    # The loss mask excludes padding and noise hits.
    expected = (events.particle_id[batch.rows[real].numpy()] > 0).sum()
    assert int(batch.loss_mask.sum()) == expected


def test_size_sorted_batches_cover_every_event_once() -> None:
    sizes = np.random.default_rng(1).integers(1, 500, 1000)
    batches = batch_event_indices(sizes, 64, shuffle=True, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * sizes[b].max() for b in batches)
    plain = batch_event_indices(sizes, 64, True, np.random.default_rng(0), sort_window=1)
    padded_plain = sum(len(b) * sizes[b].max() for b in plain)
    # Sorting within windows wastes far less on padding than random batches.
    assert padded < 0.7 * padded_plain


# ---------------------------------------------------------------- atomic file writing


def _hit_table() -> pd.DataFrame:
    """Two hits in the TrackML hit table contract, plus one extra column."""
    table = pd.DataFrame(
        {name: np.ones(2, dtype=dtype) for name, dtype in HIT_TABLE_DTYPES.items()}
    )
    return table.assign(hit_id=[1, 2], region=np.array([3, 4], dtype=np.int16))


def _fail(*args: object) -> None:
    raise RuntimeError("failed mid-write")


class _Unwritable:
    """A value whose serialisation fails, as a killed or crashed write would."""

    __reduce__ = __str__ = _fail


def _write_text(path: Path, fail: bool) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text("new")
        if fail:
            raise RuntimeError("failed mid-write")


def _write_redvid(path: Path, fail: bool) -> None:
    config = SimulationConfig(n_events=2, tracks="3", track_type="linear")
    if not fail:
        generate_dataset(config, path, progress=False)
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redvid, "_chunk_csv", _fail)  # after the header is written
        generate_dataset(config, path, progress=False)


def _write_derived(path: Path, fail: bool) -> None:
    rows = _redvid_rows().assign(source_event=_Unwritable() if fail else 1)
    write_derived_rows(rows, "linear", path)


def _write_hit_table(path: Path, fail: bool) -> None:
    write_hit_table(_hit_table().drop(columns="q" if fail else []), path)


def _write_checkpoint(path: Path, fail: bool) -> None:
    save_checkpoint({"epoch": _Unwritable() if fail else 0}, path)


WRITERS = {
    "atomic_write": (_write_text, "out.txt"),
    "generate_dataset": (_write_redvid, "sim.csv"),
    "write_derived_rows": (_write_derived, "groups.csv"),
    "write_hit_table parquet": (_write_hit_table, "table.parquet"),
    "write_hit_table csv.gz": (_write_hit_table, "table.csv.gz"),
    "save_checkpoint": (_write_checkpoint, "model.pt"),
}


@pytest.fixture
def umask():
    """Set the process umask for one test (``umask(value)``), restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("writer", WRITERS)
def test_written_files_are_shared_by_the_umask(tmp_path: Path, umask, writer: str) -> None:
    write, name = WRITERS[writer]
    for mask, mode in ((0o000, 0o644), (0o027, 0o640)):
        umask(mask)
        folder = tmp_path / f"mask{mask:03o}"
        write(folder / name, fail=False)
        # 0644 less the umask: readable by others unless the umask says otherwise,
        # never group/world-writable, never mkstemp's 0600.
        assert stat.S_IMODE((folder / name).stat().st_mode) == mode
        assert [p.name for p in folder.iterdir()] == [name]


@pytest.mark.parametrize("writer", WRITERS)
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, writer: str
) -> None:
    write, name = WRITERS[writer]
    path = tmp_path / name
    path.write_bytes(b"old")
    with pytest.raises((RuntimeError, ValueError)):
        write(path, fail=True)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_hit_table_extra_columns_are_written_not_dropped(tmp_path: Path) -> None:
    for name in ("t.parquet", "t.csv"):
        write_hit_table(_hit_table(), tmp_path / name)
        back = read_hit_table(tmp_path / name)
        assert list(back.columns) == [*HIT_TABLE_COLUMNS, "region"]
        assert back["region"].tolist() == [3, 4]
    # A text column with a missing value keeps its values (typed from the rows).
    labelled = _hit_table().assign(label=pd.Series(["a", None], dtype=object))
    write_hit_table(labelled, tmp_path / "l.parquet")
    label = read_hit_table(tmp_path / "l.parquet")["label"]
    assert label.iloc[0] == "a" and pd.isna(label.iloc[1])
    with pytest.raises(ValueError, match=r"t\.csv: hit table to write lacks column\(s\) \['q'\]"):
        write_hit_table(_hit_table().drop(columns="q"), tmp_path / "t.csv")


# --------------------------------------------------------------------------------------
# Noise is what the row says (REDVID files numbering their tracks from 0)
# --------------------------------------------------------------------------------------


def _simulated_rows(noise_hits: float = 0.0) -> pd.DataFrame:
    config = SimulationConfig(
        n_events=12, tracks="5-20", track_type="helical", noise_hits_per_event=noise_hits, seed=4
    )
    return redvid.simulate_events(config)


def test_tracks_numbered_from_zero_are_read_as_tracks(tmp_path: Path) -> None:
    rows = _simulated_rows()
    original = load_events(_write(rows, tmp_path / "from1.csv"), "helical")
    # The same events, the tracks numbered 0..n-1: track 0 is one real helix per event.
    from_zero = rows.assign(track_id=rows["track_id"] - 1)
    assert (from_zero["track_id"] == 0).mean() > 0.02  # a real share of the hits
    events = load_events(_write(from_zero, tmp_path / "from0.csv"), "helical")
    # Nothing became noise: every hit keeps its track (ids read shifted by one) and weight.
    assert (events.particle_id != 0).all()
    np.testing.assert_array_equal(events.particle_id, original.particle_id)
    np.testing.assert_array_equal(events.weight, original.weight)
    np.testing.assert_array_equal(events.targets, original.targets)
    per_event = [len(np.unique(events.particle_id[a:b])) for a, b in pairwise(events.offsets)]
    assert per_event == rows.groupby("event_id")["track_id"].nunique().tolist()


def test_genuine_noise_rows_stay_noise_with_or_without_a_track_zero(tmp_path: Path) -> None:
    rows = _simulated_rows(noise_hits=6)
    noise = (rows["track_id"] == 0).to_numpy()
    assert noise.sum() == 6 * 12
    events = load_events(_write(rows, tmp_path / "noisy.csv"), "helical")
    assert (events.particle_id == 0).sum() == 6 * 12
    assert events.weight[events.particle_id == 0].tolist() == [0.0] * (6 * 12)
    # Tracks numbered from 0 next to real noise rows (track_id 0, coefficients 0): the row
    # tells them apart; noise stays noise, track 0 stays a track.
    from_zero = rows.assign(track_id=np.where(noise, 0, rows["track_id"] - 1))
    mixed = load_events(_write(from_zero, tmp_path / "mixed.csv"), "helical")
    np.testing.assert_array_equal(mixed.particle_id, events.particle_id)
    np.testing.assert_array_equal(mixed.weight, events.weight)
    # Empty coefficient cells mark noise as well as zeros do.
    blank = from_zero.astype({"radial_coeff": float})
    blank.loc[noise, ["radial_coeff", "pitch_coeff", "azimuthal_coeff"]] = np.nan
    again = load_events(_write(blank, tmp_path / "blank.csv"), "helical")
    np.testing.assert_array_equal(again.particle_id, events.particle_id)


def test_tracks_from_zero_and_track_minus_one_are_refused(tmp_path: Path) -> None:
    rows = _simulated_rows()
    rows = rows.assign(track_id=rows["track_id"] - 2)  # ids -1, 0, 1, ...
    path = _write(rows, tmp_path / "minus.csv")
    with pytest.raises(UserError, match=r"minus\.csv: rows with track_id 0 carry .* mark noise"):
        load_events(path, "helical")


def test_refiner_groups_keep_track_zero(tmp_path: Path) -> None:
    from refiner.dataset import GroupConfig, build_group_file

    rows = _simulated_rows()
    config = GroupConfig(min_hits=1, merge_fraction=0.0)
    before = build_group_file(
        _write(rows, tmp_path / "a.csv"), "helical", tmp_path / "ga.csv", config
    )
    shifted = rows.assign(track_id=rows["track_id"] - 1)
    after = build_group_file(
        _write(shifted, tmp_path / "b.csv"), "helical", tmp_path / "gb.csv", config
    )
    assert after.n_groups == before.n_groups == rows.groupby("event_id")["track_id"].nunique().sum()
    assert after.n_hits == before.n_hits == len(rows)


# --------------------------------------------------------------------------------------
# The data-type registry and data-file resolution
# --------------------------------------------------------------------------------------


def test_every_data_type_is_described_once_in_the_registry() -> None:
    assert DATA_TYPES == ("linear", "helical", "trackml")
    assert [data_type_named(name).name for name in DATA_TYPES] == list(DATA_TYPES)
    simulated = {name for name in DATA_TYPES if data_type_named(name).simulated}
    assert simulated == {"linear", "helical"}
    assert {name: data_type_named(name).length_unit for name in DATA_TYPES} == {
        "linear": "m",
        "helical": "m",
        "trackml": "mm",
    }
    with pytest.raises(UserError, match=r"unknown data_type 'curly'; use one of \('linear'"):
        read_rows("whatever.csv", "curly")
    # The registry's columns are the loader's.
    linear, helical = data_type_named("linear"), data_type_named("helical")
    table = pd.DataFrame(columns=["sin_phi0", "cos_phi0"])
    assert linear.target_columns(table) == ("theta", "sin_phi", "cos_phi")
    assert helical.target_columns(table)[-2:] == ("sin_phi0", "cos_phi0")
    assert data_type_named("trackml").target_columns(table) == ("theta", "sin_phi", "cos_phi", "q")


def test_data_files_resolve_without_the_training_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_files, "REPO_ROOT", tmp_path)
    settings = {"data_type": "helical", "tracks": "3", "n_events": 20, "seed": 2, "lr": 1.0}
    source = data_files.DataSource.of(settings)  # fields it does not know are ignored
    assert source == data_files.DataSource(None, "helical", "3", 20, 2)
    expected = tmp_path / "data" / "redvid_helical_3_20ev_seed2.csv"
    assert data_files.default_data_path(source) == expected
    assert not expected.exists()
    assert data_files.ensure_data(source) == expected
    assert load_events(expected, "helical").n_events == 20
    given = data_files.DataSource(str(tmp_path / "mine.csv"), "linear")
    assert data_files.ensure_data(given) == tmp_path / "mine.csv"
    with pytest.raises(UserError, match="--data_type trackml needs --data_path"):
        data_files.ensure_data(data_files.DataSource(data_type="trackml"))
