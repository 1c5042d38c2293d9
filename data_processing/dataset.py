"""Hit data sets: loading into an ``EventSet``, splitting and normalisation.

Data flow: a file (REDVID CSV or a converted TrackML set; its ``DataType`` in
``data_types`` says how it is read) -> a *hit table* (one row per hit: event_id, hit_id,
particle_id, weight, input columns, target columns, extras) -> an ``EventSet`` (flat numpy
arrays sorted by event, with per-event offsets) -> ``batching`` (device tensors, batches).

Conventions:
* ``particle_id == 0`` marks noise hits. They are model inputs but carry no target: the
  loss ignores them and their weight is 0 in the TrackML score. (A REDVID row is noise
  when the row says so, see ``redvid_format``.)
* REDVID inputs are the Cartesian hit position (x, y, z) = (r cos(theta), r sin(theta), z)
  in the file's length unit: Cartesian avoids the +-pi jump of the azimuth.
* Targets: ``linear``: (theta, sin phi, cos phi) of the track direction;
  ``helical``: (radial_coeff a, pitch_coeff b, azimuthal_coeff d) of r = a t,
  phi = phi0 + d t, z = b t, plus (sin phi0, cos phi0) when the file has random phi0;
  ``trackml``: (theta, sin phi, cos phi, q) of the particle's initial momentum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_processing.common import concatenated_ranges
from data_processing.data_types import data_type_named
from data_processing.errors import UserError
from data_processing.hit_table import CORE_COLUMNS, require_columns, require_finite


def read_rows(path: str | Path, data_type: str) -> pd.DataFrame:
    """A data file's rows in its own layout, validated as the loader needs them.

    REDVID: the CSV's columns (``redvid_format.read_redvid_rows``); TrackML: the converted
    hit table (``hit_table.read_hit_table``, already a hit table). Raises
    FileNotFoundError / UserError naming the file and what is wrong.
    """
    kind = data_type_named(data_type)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    return kind.read_rows(path)


def hit_table_from_rows(rows: pd.DataFrame, data_type: str, source: str) -> pd.DataFrame:
    """The hit table (see module docstring) of rows from ``read_rows``."""
    return data_type_named(data_type).hit_table(rows, source)


def load_hit_table(path: str | Path, data_type: str) -> pd.DataFrame:
    """Read any supported data file into a hit table (see module docstring)."""
    return hit_table_from_rows(read_rows(path, data_type), data_type, str(path))


def columns_for(data_type: str, table: pd.DataFrame) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input columns, target columns) of a hit table of the given data type."""
    kind = data_type_named(data_type)
    return tuple(kind.input_columns), tuple(kind.target_columns(table))


@dataclass
class EventSet:
    """Hits of many events, stored flat and sorted by event.

    Hits of event ``e`` are rows ``offsets[e]:offsets[e + 1]`` of every per-hit array.
    T = total hits, E = events, F = input features, K = targets.
    """

    inputs: np.ndarray  # [T, F] float32
    targets: np.ndarray  # [T, K] float32; 0 for noise hits (masked out of the loss)
    particle_id: np.ndarray  # [T] int64, 0 = noise
    hit_id: np.ndarray  # [T] int64, unique within an event
    weight: np.ndarray  # [T] float32, TrackML score weight
    event_id: np.ndarray  # [E] int64
    offsets: np.ndarray  # [E + 1] int64
    input_names: tuple[str, ...]
    target_names: tuple[str, ...]
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-hit [T] columns

    @classmethod
    def from_table(
        cls,
        table: pd.DataFrame,
        input_columns: tuple[str, ...],
        target_columns: tuple[str, ...],
        max_nr_hits: int | None = None,
        source: str = "hit table",
    ) -> EventSet:
        """Build from a hit table; rows are grouped by event_id (stable, order kept).

        Raises UserError naming ``source`` for missing columns, NaN inputs, duplicated
        hit ids within an event, or an event with more than ``max_nr_hits`` hits.
        """
        require_columns(table, (*CORE_COLUMNS, *input_columns, *target_columns), source)
        if table.empty:
            raise UserError(f"{source}: no hits")
        require_finite(table, input_columns, source)
        table = table.sort_values("event_id", kind="stable")
        event_ids, starts, sizes = np.unique(
            table["event_id"].to_numpy(np.int64), return_index=True, return_counts=True
        )
        if max_nr_hits is not None and sizes.max() > max_nr_hits:
            too_big = event_ids[sizes > max_nr_hits]
            raise UserError(
                f"{source}: {len(too_big)} event(s) exceed max_nr_hits={max_nr_hits}, "
                f"e.g. event {too_big[0]} with {sizes[sizes > max_nr_hits][0]} hits; "
                "raise --max_nr_hits"
            )
        duplicated = table.duplicated(["event_id", "hit_id"])
        if duplicated.any():
            event, hit = table.loc[duplicated, ["event_id", "hit_id"]].iloc[0].astype(np.int64)
            raise UserError(f"{source}: hit_id {hit} appears twice in event {event}")
        particle_id = table["particle_id"].to_numpy(np.int64)
        targets = table.loc[:, list(target_columns)].to_numpy(np.float32, copy=True)
        targets[particle_id == 0] = 0.0
        extra_names = [c for c in table.columns if c not in (*CORE_COLUMNS, *input_columns)]
        extra_names = [c for c in extra_names if c not in target_columns]
        return cls(
            inputs=table.loc[:, list(input_columns)].to_numpy(np.float32),
            targets=targets,
            particle_id=particle_id,
            hit_id=table["hit_id"].to_numpy(np.int64),
            weight=table["weight"].to_numpy(np.float32),
            event_id=event_ids,
            offsets=np.append(starts, len(table)).astype(np.int64),
            input_names=tuple(input_columns),
            target_names=tuple(target_columns),
            extras={name: table[name].to_numpy() for name in extra_names},
        )

    @property
    def n_events(self) -> int:
        return len(self.event_id)

    @property
    def n_hits(self) -> int:
        return len(self.hit_id)

    @property
    def sizes(self) -> np.ndarray:
        """[E] hits per event."""
        return np.diff(self.offsets)

    def hit_event_index(self) -> np.ndarray:
        """[T] position (0..E-1) of each hit's event in this set."""
        return np.repeat(np.arange(self.n_events), self.sizes)

    def hit_event_ids(self) -> np.ndarray:
        """[T] event id of each hit."""
        return np.repeat(self.event_id, self.sizes)

    def subset(self, event_indices: np.ndarray) -> EventSet:
        """A new EventSet holding the given events (positions, not ids), in that order."""
        event_indices = np.asarray(event_indices, dtype=np.int64)
        sizes = self.sizes[event_indices]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        rows = concatenated_ranges(self.offsets[event_indices], sizes)
        return EventSet(
            inputs=self.inputs[rows],
            targets=self.targets[rows],
            particle_id=self.particle_id[rows],
            hit_id=self.hit_id[rows],
            weight=self.weight[rows],
            event_id=self.event_id[event_indices],
            offsets=offsets,
            input_names=self.input_names,
            target_names=self.target_names,
            extras={name: values[rows] for name, values in self.extras.items()},
        )

    def truth_frame(self) -> pd.DataFrame:
        """Per-hit truth for scoring: event_id, hit_id, particle_id, weight, extras."""
        frame = pd.DataFrame(
            {
                "event_id": self.hit_event_ids(),
                "hit_id": self.hit_id,
                "particle_id": self.particle_id,
                "weight": self.weight,
            }
        )
        for name, values in self.extras.items():
            frame[name] = values
        return frame


def load_events(path: str | Path, data_type: str, max_nr_hits: int | None = None) -> EventSet:
    """Read a data file straight into an EventSet with the data type's columns."""
    return events_from_rows(read_rows(path, data_type), data_type, str(path), max_nr_hits)


def events_from_rows(
    rows: pd.DataFrame, data_type: str, source: str, max_nr_hits: int | None = None
) -> EventSet:
    """The EventSet of rows from ``read_rows`` (``source`` names the file in errors)."""
    table = hit_table_from_rows(rows, data_type, source)
    inputs, targets = columns_for(data_type, table)
    return EventSet.from_table(table, inputs, targets, max_nr_hits, source=source)


#: Train / validation / test shares of a data set's events (the reference's 70/15/15).
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def split_events(
    n_events: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/validation/test split of event positions, reproducible by ``seed``."""
    if n_events < 3:
        raise UserError(f"need at least 3 events to split, got {n_events}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise UserError(f"split fractions {fractions} do not sum to 1")
    order = np.random.default_rng(seed).permutation(n_events)
    n_train = max(1, round(fractions[0] * n_events))
    n_val = max(1, round(fractions[1] * n_events))
    n_train = min(n_train, n_events - 2)
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_val]),
        np.sort(order[n_train + n_val :]),
    )


@dataclass
class Normaliser:
    """Per-column standardisation of inputs and targets, fitted on the training split.

    Stored in the checkpoint so evaluation never recomputes it on the test data.
    """

    input_mean: np.ndarray  # [F]
    input_std: np.ndarray  # [F]
    target_mean: np.ndarray  # [K]
    target_std: np.ndarray  # [K]

    @classmethod
    def fit(cls, events: EventSet) -> Normaliser:
        """Fit on all hits (inputs) and on track hits only (targets; noise has none)."""
        track = events.particle_id != 0
        targets = events.targets[track] if track.any() else events.targets
        return cls(
            input_mean=events.inputs.mean(axis=0, dtype=np.float64),
            input_std=_safe_std(events.inputs),
            target_mean=targets.mean(axis=0, dtype=np.float64),
            target_std=_safe_std(targets),
        )

    def normalise_inputs(self, inputs: np.ndarray) -> np.ndarray:
        return ((inputs - self.input_mean) / self.input_std).astype(np.float32)

    def normalise_targets(self, targets: np.ndarray) -> np.ndarray:
        return ((targets - self.target_mean) / self.target_std).astype(np.float32)

    def denormalise_targets(self, targets: np.ndarray) -> np.ndarray:
        return (targets * self.target_std + self.target_mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Normaliser:
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in values.items()})


def _safe_std(values: np.ndarray) -> np.ndarray:
    std = values.std(axis=0, dtype=np.float64)
    # A constant column (e.g. all tracks of one charge) must not divide by zero.
    return np.where(std > 1e-12, std, 1.0)
