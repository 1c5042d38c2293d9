"""Derived data files: rows of a data file regrouped into new events.

The refiner (one event per (event, particle) group) and the domain decomposition (one
event per (event, region)) both write new data files in the source's own format, so the
one training loop and the one loader read them unchanged. The helpers they share:

* ``read_source_rows``: a data file's rows in its own layout (REDVID CSV columns or a
  converted TrackML hit table);
* ``write_derived_rows``: write regrouped rows back in that format, atomically;
* ``EventSelection``: which source events (parts of the 70/15/15 split) to take.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.dataset import DATA_TYPES, split_events

# Which column names the particle of a hit, per data type (the source file's own name).
PARTICLE_COLUMN = {"linear": "track_id", "helical": "track_id", "trackml": "particle_id"}
SOURCE_EVENT_COLUMN = "source_event"


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


def read_source_rows(path: str | Path, data_type: str) -> pd.DataFrame:
    """The source file's rows in its own layout (REDVID CSV or converted TrackML table).

    Returns a DataFrame with at least ``event_id`` and the data type's particle column.
    Raises FileNotFoundError / ValueError naming the file and the missing column.
    """
    if data_type not in DATA_TYPES:
        raise ValueError(f"unknown data_type {data_type!r}; use one of {DATA_TYPES}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"source data file not found: {path}")
    if data_type == "trackml":
        from data_processing.trackml_data import read_hit_table

        rows = read_hit_table(path)
    else:
        try:
            rows = pd.read_csv(path, sep=";")
        except pd.errors.EmptyDataError as err:
            raise ValueError(f"{path}: file is empty") from err
    needed = ("event_id", PARTICLE_COLUMN[data_type])
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(rows.columns)}")
    if rows.empty:
        raise ValueError(f"{path}: no hits")
    return rows


def _write_atomically(frame: pd.DataFrame, path: Path, sep: str) -> None:
    """Write a CSV via a temporary file and os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, sep=sep, index=False)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_derived_rows(rows: pd.DataFrame, data_type: str, path: str | Path) -> Path:
    """Write source rows regrouped into new events in the data type's own format.

    ``rows`` holds the source file's columns (``event_id`` renumbered, extra columns such
    as ``source_event`` allowed); the file is a REDVID CSV or a TrackML hit table as the
    module docstring describes, written atomically, readable by ``load_events``.
    """
    path = Path(path)
    if data_type != "trackml":
        _write_atomically(rows, path, sep=";")
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
