"""Derived data files: rows of a data file regrouped into new events.

The refiner (one event per (event, particle) group) and the domain decomposition (one
event per (event, region)) both write new data files in the source's own format, so the
one training loop and the one loader read them unchanged. The helpers they share:

* (reading: ``dataset.read_rows``, a data file's rows in its own layout, REDVID CSV
  columns or a converted TrackML hit table, and ``dataset.events_from_rows``);
* ``with_source_columns``: tag rows with their source event (``source_event_id``) and
  original event (``source_event``) before their event_id is renumbered;
* ``write_derived_rows``: write regrouped rows back in that format, atomically;
* ``EventSelection``: which source events (parts of the 70/15/15 split) to take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.common import atomic_write
from data_processing.dataset import split_events

# Which column names the particle of a hit, per data type (the source file's own name).
PARTICLE_COLUMN = {"linear": "track_id", "helical": "track_id", "trackml": "particle_id"}
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
            raise ValueError(f"parts must be among train, val, test; got {self.parts}")

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
    if data_type != "trackml":
        with atomic_write(path) as tmp:
            rows.to_csv(tmp, sep=";", index=False)
        return path
    from data_processing.trackml_data import HIT_TABLE_DTYPES, write_hit_table

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
