"""Derived data files: rows of a data file regrouped into new events.

The refiner (one event per (event, particle) group) and the domain decomposition (one
event per (event, region)) both write new data files in the source's own format, so the
one training loop and the one loader read them unchanged. The helpers they share:

* (reading: ``dataset.read_rows``, a data file's rows in its own layout, REDVID CSV
  columns or a converted TrackML hit table, and ``dataset.events_from_rows``);
* ``with_source_columns``: tag rows with their source event (``source_event_id``) and
  original event (``source_event``) before their event_id is renumbered;
* ``write_derived_rows``: write regrouped rows back in that format, atomically;
* ``EventSelection``: which source events (parts of the 70/15/15 split) to take;
* ``pair_codes``: dense codes of (event, particle) or (event, region) pairs;
* ``regroup_events``: a derived EventSet whose events are given groups of hit rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.common import atomic_write
from data_processing.data_types import data_type_named
from data_processing.dataset import EventSet, split_events
from data_processing.errors import UserError
from data_processing.hit_table import HIT_TABLE_DTYPES, write_hit_table

# Original event number of a derived file's hit: the TrackML event number for TrackML
# data (the ``trackml_data`` contract), the source event_id for REDVID data.
SOURCE_EVENT_COLUMN = "source_event"
# The event_id of the hit's event in the file a derived file was made from (for a converted
# TrackML file: the sub-event id, which ``source_event`` is not).
SOURCE_EVENT_ID_COLUMN = "source_event_id"


@dataclass(frozen=True)
class EventSelection:
    """Which source events to take groups from: parts of the training split.

    parts: names among "train", "val", "test" of ``split_events(n, fractions, seed)``;
    with the base model's fractions and seed this is exactly its split.
    """

    parts: tuple[str, ...] = ("train", "val")
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.parts) - {"train", "val", "test"}
        if unknown or not self.parts:
            raise UserError(f"parts must be among train, val, test; got {self.parts}")

    def positions(self, n_events: int) -> np.ndarray:
        """Sorted event positions (0..n_events-1) of the chosen parts."""
        parts = split_events(n_events, self.fractions, self.seed)
        names = ("train", "val", "test")
        return np.sort(np.concatenate([parts[names.index(p)] for p in self.parts]))


def with_source_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Source rows, before their ``event_id`` is renumbered, tagged with where they came
    from: ``SOURCE_EVENT_ID_COLUMN`` = their event_id, and ``SOURCE_EVENT_COLUMN`` kept
    when the source has it (a converted TrackML table names its TrackML event; a derived
    file its original event), else also their event_id (the source's events are the
    original events, e.g. a simulated REDVID file). Returns a new DataFrame."""
    event_id = rows["event_id"].to_numpy()
    tags = {SOURCE_EVENT_ID_COLUMN: event_id}
    if SOURCE_EVENT_COLUMN not in rows.columns:
        tags[SOURCE_EVENT_COLUMN] = event_id
    return rows.assign(**tags)


def write_derived_rows(rows: pd.DataFrame, data_type: str, path: str | Path) -> Path:
    """Write source rows regrouped into new events in the data type's own format.

    ``rows`` holds the source file's columns (``event_id`` renumbered, extra columns such
    as ``source_event`` allowed); the file is a REDVID CSV or a TrackML hit table as the
    module docstring describes, written atomically, readable by ``load_events``.
    """
    path = Path(path)
    if data_type_named(data_type).file_format == "redvid":
        with atomic_write(path) as tmp:
            rows.to_csv(tmp, sep=";", index=False)
        return path
    # The writer's contract has every optional column; fill the ones the source lacks.
    filled = rows.assign(
        **{
            name: (-1 if np.dtype(dtype).kind == "i" else np.nan)
            for name, dtype in HIT_TABLE_DTYPES.items()
            if name not in rows.columns
        }
    )
    write_hit_table(filled, path)
    return path


def pair_codes(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes of the distinct (first, second) pairs of two [N] int64 arrays.

    Returns ([N] int64 codes in 0..n-1, numbered in increasing (first, second) order; n,
    the number of distinct pairs). Any int64 values are allowed.
    """
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    if len(first) != len(second):
        raise ValueError(f"pair_codes: {len(first)} first but {len(second)} second values")
    if len(first) == 0:
        return np.empty(0, dtype=np.int64), 0
    # Ids can be anything up to 2**63 (TrackML particle ids reach ~9e17), so a key built
    # from the raw values could overflow int64 and give two pairs one code. Ranks of the
    # distinct values are < N each, so rank_first * n_second + rank_second < N**2 fits
    # int64 for any N below 3e9, and it orders the pairs as (first, second) does.
    _, rank_first = np.unique(first, return_inverse=True)
    distinct_second, rank_second = np.unique(second, return_inverse=True)
    keys = rank_first.reshape(-1) * len(distinct_second) + rank_second.reshape(-1)
    uniques, codes = np.unique(keys, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(uniques)


def regroup_events(
    events: EventSet,
    rows: np.ndarray,
    sizes: np.ndarray,
    extras: dict[str, np.ndarray] | None = None,
) -> EventSet:
    """A derived EventSet whose events are given groups of hit rows of ``events``.

    Args:
        events: the source set.
        rows: [T'] source rows of the new set's hits, grouped: new event g is
            ``rows[offsets[g]:offsets[g + 1]]``. A row may appear in several groups.
        sizes: [E'] hits per new event (> 0), summing to T'.
        extras: additional per-hit [T'] columns for the new set.

    Returns:
        EventSet with event ids 0..E'-1; the source's event id of every hit is kept in the
        extra column ``source_event_id`` and its row in ``source_row``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if int(sizes.sum()) != len(rows) or (sizes <= 0).any():
        raise ValueError("regroup_events: sizes must be positive and sum to len(rows)")
    source_event = events.hit_event_ids()[rows]
    new_extras = {name: values[rows] for name, values in events.extras.items()}
    new_extras.update({SOURCE_EVENT_ID_COLUMN: source_event, "source_row": rows, **(extras or {})})
    return EventSet(
        inputs=events.inputs[rows],
        targets=events.targets[rows],
        particle_id=events.particle_id[rows],
        hit_id=events.hit_id[rows],
        weight=events.weight[rows],
        event_id=np.arange(len(sizes), dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        input_names=events.input_names,
        target_names=events.target_names,
        extras=new_extras,
    )
