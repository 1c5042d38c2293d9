"""Hit data sets: loading, normalisation, splitting and batching.

Data flow: a file (REDVID CSV or a converted TrackML set) -> a *hit table* (one row per
hit: event_id, hit_id, particle_id, weight, input columns, target columns, extras) ->
an ``EventSet`` (flat numpy arrays sorted by event, with per-event offsets) ->
``DeviceEvents`` (normalised torch tensors on the training device) -> ``PaddedBatch``
(events padded to the batch's largest) or ``PackedBatch`` (hits back to back, no
padding). ``batch_event_indices`` groups events into batches (a fixed event count or a
hit budget, size-sorted) and ``BatchPlan`` uploads an epoch's batches to the device once.

Conventions:
* ``particle_id == 0`` marks noise hits. They are model inputs but carry no target: the
  loss ignores them and their weight is 0 in the TrackML score.
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
import torch
from torch import Tensor

from custom_encoder import AttentionLayout
from data_processing.common import read_csv

DATA_TYPES = ("linear", "helical", "trackml")
CORE_COLUMNS = ("event_id", "hit_id", "particle_id", "weight")
REDVID_INPUT_COLUMNS = ("x", "y", "z")
REDVID_COLUMNS = (
    "event_id",
    "sub_detector_id",
    "sub_detector_type",
    "track_id",
    "track_type",
    "radial_const",
    "azimuthal_const",
    "pitch_const",
    "radial_coeff",
    "azimuthal_coeff",
    "pitch_coeff",
    "hit_id",
    "hit_r",
    "hit_theta",
    "hit_z",
)
# Published linear sets carry the direction in these columns instead of the coefficients.
REDVID_LINEAR_DIRECTION_COLUMNS = ("theta_d", "z_d", "r_d")


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


# Columns of a REDVID file that hold numbers; the ids among them must be whole numbers.
REDVID_ID_COLUMNS = ("event_id", "track_id", "hit_id")
# (The sub-detector and track-type labels are not read as numbers.)
REDVID_NUMERIC_COLUMNS = (
    *(c for c in REDVID_COLUMNS if c not in ("sub_detector_id", "sub_detector_type", "track_type")),
    *REDVID_LINEAR_DIRECTION_COLUMNS,
)
# ``track_type`` values of track hits accepted for each data type: REDVID calls its
# helix model "helical expanding"; our simulator writes the data type itself.
REDVID_TRACK_TYPES = {
    "linear": ("linear",),
    "helical": ("helical", "helical_expanding", "helical expanding"),
}
# Row i of a CSV read by pandas is line i + 2 of the file (line 1 is the header).
_CSV_FIRST_DATA_LINE = 2


def _where(frame: pd.DataFrame, bad: np.ndarray, first_line: int | None) -> str:
    """'first in event(s) [...]' for the rows ``bad`` ([N] bool, some True) of ``frame``,
    plus the file line of the first one when the rows are lines of a file."""
    events = pd.unique(frame["event_id"].to_numpy()[bad])[:5].tolist()
    text = f"first in event(s) {events}"
    if first_line is not None:
        text += f" (line {int(np.flatnonzero(bad)[0]) + first_line})"
    return text


def _require_numeric(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> pd.DataFrame:
    """``frame`` with ``columns`` as numbers: int64 where pandas read integers, else float64.

    A cell that is not a number (text such as "abc"; an empty cell stays NaN for the
    finiteness checks) raises ValueError naming ``source``, the column, the value and
    the first event holding it.
    """
    converted = {}
    for column in columns:
        values = frame[column]
        if pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
            converted[column] = values.to_numpy(np.int64)
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if pd.api.types.is_bool_dtype(values):
            # pandas would turn True/False into 1/0, but it is no coordinate or id.
            bad = np.ones(len(values), dtype=bool)
        else:
            bad = (numbers.isna() & values.notna()).to_numpy()
        if bad.any():
            example = values.to_numpy()[bad][0]
            raise ValueError(
                f"{source}: column {column!r} has {int(bad.sum())} non-numeric value(s) "
                f"such as {example!r}, {_where(frame, bad, first_line)}"
            )
        converted[column] = numbers.to_numpy(np.float64)
    return frame.assign(**converted)


def _require_finite(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> None:
    """Raise ValueError naming ``source``, the column and the first event of a NaN/inf."""
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{source}: column {column!r} has {int(bad.sum())} NaN/inf value(s), "
                f"{_where(frame, bad, first_line)}"
            )


def _require_integral(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> None:
    """Raise ValueError for an id column holding a fractional or out-of-int64 value.

    Casting 0.5 to int64 would silently merge it into id 0. Expects finite values.
    """
    for column in columns:
        values = frame[column].to_numpy()
        if values.dtype.kind in "iu":
            continue
        bad = (values != np.floor(values)) | (np.abs(values) >= 2.0**63)
        if bad.any():
            raise ValueError(
                f"{source}: column {column!r} must hold whole numbers (it is an id) but has "
                f"{int(bad.sum())} other value(s) such as {values[bad][0].item()!r}, "
                f"{_where(frame, bad, first_line)}"
            )


def _require_track_type(
    frame: pd.DataFrame,
    data_type: str,
    is_track: np.ndarray,
    source: str,
    first_line: int | None = None,
) -> None:
    """The ``track_type`` of every track hit must name ``data_type``.

    Noise hits carry no track, so their value (our simulator writes the data set's type)
    is not checked. Without this check a helical file read as linear would load with
    targets computed by the wrong track model.
    """
    values = frame["track_type"].astype(str).str.strip().str.lower().to_numpy()
    bad = is_track & ~np.isin(values, REDVID_TRACK_TYPES[data_type])
    if bad.any():
        found = sorted(set(frame["track_type"].astype(str).to_numpy()[bad]))
        raise ValueError(
            f"{source}: read as {data_type!r} data, but column 'track_type' says {found} "
            f"on {int(bad.sum())} track hit(s), {_where(frame, bad, first_line)}; "
            "pass the data type the file was made with"
        )


def read_redvid_rows(path: str | Path, data_type: str) -> pd.DataFrame:
    """Read and validate a REDVID ``;``-separated CSV, keeping the file's own columns.

    Args:
        path: the CSV file.
        data_type: ``"linear"`` or ``"helical"``; must match the ``track_type`` column of
            the track hits when the file has one.

    Returns:
        The file's rows in file order (index 0..n-1) with every column of it; event_id,
        track_id (and hit_id when present) as int64; the other numeric REDVID columns
        present (``REDVID_NUMERIC_COLUMNS``) as float64, or int64 where the file holds
        integers.

    Raises:
        ValueError naming the file (and the column, value and first event or line) for:
        an unreadable, empty or not ``;``-separated file, a missing column, a non-numeric
        cell, NaN/inf in an id or hit coordinate, a fractional id, or a ``track_type``
        other than ``data_type`` on a track hit.
    """
    source = str(path)
    if data_type not in REDVID_TRACK_TYPES:
        raise ValueError(f"{source}: REDVID data_type must be linear or helical, not {data_type!r}")
    raw = read_csv(path, "';'-separated REDVID CSV file", sep=";")
    if len(raw.columns) < 2:
        raise ValueError(
            f"{source}: not a ';'-separated REDVID file (header {list(raw.columns)[:3]})"
        )
    if raw.empty:
        raise ValueError(f"{source}: file has a header but no hits")
    required = ("event_id", "track_id", "hit_r", "hit_theta", "hit_z")
    _require_columns(raw, required, source)
    numeric = tuple(c for c in REDVID_NUMERIC_COLUMNS if c in raw.columns)
    ids = tuple(c for c in REDVID_ID_COLUMNS if c in raw.columns)
    line = _CSV_FIRST_DATA_LINE
    raw = _require_numeric(raw, numeric, source, line)
    # Target columns may be NaN on noise hits; their track hits are checked later.
    _require_finite(raw, (*ids, "hit_r", "hit_theta", "hit_z"), source, line)
    _require_integral(raw, ids, source, line)
    raw = raw.assign(**{c: raw[c].to_numpy(np.int64) for c in ids})
    if "track_type" in raw.columns:
        _require_track_type(raw, data_type, raw["track_id"].to_numpy() != 0, source, line)
    return raw


def read_redvid_csv(path: str | Path, data_type: str) -> pd.DataFrame:
    """Read a REDVID ``;``-separated CSV (ours or anyone's) into a hit table.

    Args:
        path: the CSV file.
        data_type: ``"linear"`` or ``"helical"``; selects the target columns.

    Returns:
        Hit table with columns event_id, hit_id, particle_id (= track_id, 0 = noise),
        weight (1 for track hits, 0 for noise), x, y, z and the target columns.

    Raises:
        ValueError naming the file for everything ``read_redvid_rows`` rejects and for
        NaN/inf targets on a track hit.
    """
    return redvid_hit_table(read_redvid_rows(path, data_type), data_type, str(path))


def redvid_hit_table(raw: pd.DataFrame, data_type: str, source: str) -> pd.DataFrame:
    """The hit table (see ``read_redvid_csv``) of rows from ``read_redvid_rows``.

    ``source`` names the file in error messages (NaN/inf targets on a track hit).
    """
    table = pd.DataFrame(
        {
            "event_id": raw["event_id"].to_numpy(np.int64),
            "particle_id": raw["track_id"].to_numpy(np.int64),
        }
    )
    if "hit_id" in raw.columns:
        table["hit_id"] = raw["hit_id"].to_numpy(np.int64)
    else:
        table["hit_id"] = table.groupby("event_id").cumcount().to_numpy(np.int64)
    is_track = table["particle_id"].to_numpy() != 0
    table["weight"] = is_track.astype(np.float32)
    r = raw["hit_r"].to_numpy(np.float64)
    azimuth = raw["hit_theta"].to_numpy(np.float64)
    table["x"] = r * np.cos(azimuth)
    table["y"] = r * np.sin(azimuth)
    table["z"] = raw["hit_z"].to_numpy(np.float64)

    if data_type == "linear":
        targets = _linear_targets(raw, source)
    else:
        targets = _helical_targets(raw, source)
    for name, values in targets.items():
        # Noise hits have no track: their targets are undefined, so NaN, never used.
        table[name] = np.where(is_track, values, np.nan)
    bad = ~np.isfinite(table.loc[is_track, list(targets)].to_numpy())
    if bad.any():
        events = table.loc[is_track].loc[bad.any(axis=1), "event_id"].unique()[:5].tolist()
        raise ValueError(f"{source}: NaN/inf target values for track hits in event(s) {events}")
    return table


def _linear_targets(raw: pd.DataFrame, source: str) -> dict[str, np.ndarray]:
    """(theta, sin phi, cos phi) of a straight track's direction."""
    if all(c in raw.columns for c in REDVID_LINEAR_DIRECTION_COLUMNS):
        theta = np.arctan2(raw["r_d"].to_numpy(np.float64), raw["z_d"].to_numpy(np.float64))
        phi = raw["theta_d"].to_numpy(np.float64)
    else:
        needed = ("radial_coeff", "pitch_coeff", "azimuthal_const")
        if not all(c in raw.columns for c in needed):
            raise ValueError(
                f"{source}: linear data needs columns {list(REDVID_LINEAR_DIRECTION_COLUMNS)} "
                f"or {list(needed)}; found {list(raw.columns)}"
            )
        # A straight track is the degenerate helix r = a t, z = b t at fixed azimuth phi0.
        theta = np.arctan2(
            raw["radial_coeff"].to_numpy(np.float64), raw["pitch_coeff"].to_numpy(np.float64)
        )
        phi = raw["azimuthal_const"].to_numpy(np.float64)
    return {"theta": theta, "sin_phi": np.sin(phi), "cos_phi": np.cos(phi)}


def _helical_targets(raw: pd.DataFrame, source: str) -> dict[str, np.ndarray]:
    """(a, b, d) of r = a t, phi = phi0 + d t, z = b t; plus sin/cos phi0 if phi0 varies."""
    _require_columns(raw, ("radial_coeff", "pitch_coeff", "azimuthal_coeff"), source)
    targets = {
        "radial_coeff": raw["radial_coeff"].to_numpy(np.float64),
        "pitch_coeff": raw["pitch_coeff"].to_numpy(np.float64),
        "azimuthal_coeff": raw["azimuthal_coeff"].to_numpy(np.float64),
    }
    if "azimuthal_const" in raw.columns:
        phi0 = raw["azimuthal_const"].to_numpy(np.float64)
        # With a random start azimuth, (a, b, d) no longer identify a track on their own.
        if np.any(phi0[raw["track_id"].to_numpy() != 0] != 0):
            targets["sin_phi0"] = np.sin(phi0)
            targets["cos_phi0"] = np.cos(phi0)
    return targets


def read_rows(path: str | Path, data_type: str) -> pd.DataFrame:
    """A data file's rows in its own layout, validated as the loader needs them.

    REDVID: the CSV's columns (``read_redvid_rows``); TrackML: the converted hit table
    (``trackml_data.read_hit_table``, already a hit table). Raises FileNotFoundError /
    ValueError naming the file and what is wrong.
    """
    if data_type not in DATA_TYPES:
        raise ValueError(f"unknown data_type {data_type!r}; use one of {DATA_TYPES}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if data_type == "trackml":
        from data_processing.trackml_data import read_hit_table

        return read_hit_table(path)
    return read_redvid_rows(path, data_type)


def hit_table_from_rows(rows: pd.DataFrame, data_type: str, source: str) -> pd.DataFrame:
    """The hit table (see module docstring) of rows from ``read_rows``."""
    return rows if data_type == "trackml" else redvid_hit_table(rows, data_type, source)


def load_hit_table(path: str | Path, data_type: str) -> pd.DataFrame:
    """Read any supported data file into a hit table (see module docstring)."""
    return hit_table_from_rows(read_rows(path, data_type), data_type, str(path))


def columns_for(data_type: str, table: pd.DataFrame) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input columns, target columns) of a hit table of the given data type."""
    if data_type == "trackml":
        from data_processing.trackml_data import INPUT_COLUMNS, TARGET_COLUMNS

        return tuple(INPUT_COLUMNS), tuple(TARGET_COLUMNS)
    if data_type == "linear":
        return REDVID_INPUT_COLUMNS, ("theta", "sin_phi", "cos_phi")
    targets = ("radial_coeff", "pitch_coeff", "azimuthal_coeff")
    if "sin_phi0" in table.columns:
        targets = (*targets, "sin_phi0", "cos_phi0")
    return REDVID_INPUT_COLUMNS, targets


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

        Raises ValueError naming ``source`` for missing columns, NaN inputs, duplicated
        hit ids within an event, or an event with more than ``max_nr_hits`` hits.
        """
        _require_columns(table, (*CORE_COLUMNS, *input_columns, *target_columns), source)
        if table.empty:
            raise ValueError(f"{source}: no hits")
        _require_finite(table, input_columns, source)
        table = table.sort_values("event_id", kind="stable")
        event_ids, starts, sizes = np.unique(
            table["event_id"].to_numpy(np.int64), return_index=True, return_counts=True
        )
        if max_nr_hits is not None and sizes.max() > max_nr_hits:
            too_big = event_ids[sizes > max_nr_hits]
            raise ValueError(
                f"{source}: {len(too_big)} event(s) exceed max_nr_hits={max_nr_hits}, "
                f"e.g. event {too_big[0]} with {sizes[sizes > max_nr_hits][0]} hits; "
                "raise --max_nr_hits"
            )
        duplicated = table.duplicated(["event_id", "hit_id"])
        if duplicated.any():
            event, hit = table.loc[duplicated, ["event_id", "hit_id"]].iloc[0].astype(np.int64)
            raise ValueError(f"{source}: hit_id {hit} appears twice in event {event}")
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
        # Hit rows of the chosen events, gathered without a per-event loop.
        rows = np.repeat(self.offsets[event_indices] - offsets[:-1], sizes) + np.arange(offsets[-1])
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


def split_events(
    n_events: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/validation/test split of event positions, reproducible by ``seed``."""
    if n_events < 3:
        raise ValueError(f"need at least 3 events to split, got {n_events}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions {fractions} do not sum to 1")
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


@dataclass
class DeviceEvents:
    """An EventSet's normalised arrays as torch tensors on one device.

    Keeping the whole set on the device lets a batch be gathered with a few index ops
    instead of a host-to-device copy per step.
    """

    inputs: Tensor  # [T, F] float32
    targets: Tensor  # [T, K] float32
    loss_mask: Tensor  # [T] bool: hits that carry a target (not noise)
    offsets: Tensor  # [E + 1] int64
    sizes: Tensor  # [E] int64

    @classmethod
    def from_events(
        cls, events: EventSet, normaliser: Normaliser, device: torch.device | str = "cpu"
    ) -> DeviceEvents:
        targets = normaliser.normalise_targets(events.targets)
        track = events.particle_id != 0
        targets[~track] = 0.0
        return cls(
            inputs=torch.from_numpy(normaliser.normalise_inputs(events.inputs)).to(device),
            targets=torch.from_numpy(targets).to(device),
            loss_mask=torch.from_numpy(track).to(device),
            offsets=torch.from_numpy(events.offsets).to(device),
            sizes=torch.from_numpy(events.sizes).to(device),
        )

    @property
    def n_events(self) -> int:
        return len(self.sizes)


@dataclass
class PaddedBatch:
    """Events padded to the longest event of the batch.

    x: [B, N, F]; y: [B, N, K]; loss_mask: [B, N] real hits with a target;
    layout.pad_mask: [B, N] True at padding; rows: [B, N] flat hit row of each
    position in the DeviceEvents (-1 at padding), to scatter predictions back.
    """

    x: Tensor
    y: Tensor
    loss_mask: Tensor
    layout: AttentionLayout
    rows: Tensor


def padded_batch(
    data: DeviceEvents, event_index: Tensor, n_max: int | None = None, pad_value: float = 0.0
) -> PaddedBatch:
    """Gather the events ``event_index`` ([B] positions) into a padded batch.

    Vectorised: one gather for all events; the pad value never reaches a real hit's
    output because padding keys are masked in attention. Pass ``n_max`` (the largest
    event size of the batch, known on the host) to avoid a device-to-host sync.
    """
    sizes = data.sizes[event_index]
    if n_max is None:
        n_max = int(sizes.max())
    slot = torch.arange(n_max, device=sizes.device)
    real = slot[None, :] < sizes[:, None]
    rows = data.offsets[event_index][:, None] + slot[None, :]
    rows = torch.where(real, rows, torch.zeros_like(rows))
    x = data.inputs[rows].masked_fill(~real[..., None], pad_value)
    y = data.targets[rows].masked_fill(~real[..., None], 0.0)
    loss_mask = data.loss_mask[rows] & real
    return PaddedBatch(
        x=x,
        y=y,
        loss_mask=loss_mask,
        layout=AttentionLayout(pad_mask=~real),
        rows=torch.where(real, rows, torch.full_like(rows, -1)),
    )


@dataclass
class PackedBatch:
    """Events packed back to back: no padding anywhere.

    x: [T, F]; y: [T, K]; loss_mask: [T] hits with a target; layout: packed
    ``AttentionLayout`` (cu_seqlens [B + 1] int32, max_seqlen); rows: [T] flat hit row
    of each packed hit in the DeviceEvents, to scatter predictions back.
    """

    x: Tensor
    y: Tensor
    loss_mask: Tensor
    layout: AttentionLayout
    rows: Tensor


Batch = PaddedBatch | PackedBatch


def packed_batch(
    data: DeviceEvents,
    event_index: Tensor,
    n_hits: int | None = None,
    max_len: int | None = None,
) -> PackedBatch:
    """Gather the events ``event_index`` ([B] positions) into a packed batch.

    Vectorised, one gather for all events. Pass ``n_hits`` (sum of the events' sizes)
    and ``max_len`` (their maximum), known on the host, to avoid device-to-host syncs.
    """
    sizes = data.sizes[event_index]
    if n_hits is None:
        n_hits = int(sizes.sum())
    if max_len is None:
        max_len = int(sizes.max())
    # The kernels need only an upper bound of the longest event. Rounding it up to a
    # power of two keeps torch.compile from specialising (recompiling) on every value.
    max_len = 1 << max(4, (max_len - 1).bit_length())
    layout = AttentionLayout.packed(sizes, max_len, n_hits)
    # slots = event * max_len + position within the event (see AttentionLayout.packed).
    rows = data.offsets[event_index][layout.slots // max_len] + layout.slots % max_len
    return PackedBatch(
        x=data.inputs[rows],
        y=data.targets[rows],
        loss_mask=data.loss_mask[rows],
        layout=layout,
        rows=rows,
    )


def batch_event_indices(
    sizes: np.ndarray,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    sort_window: int = 50,
    hits_per_batch: int = 0,
) -> list[np.ndarray]:
    """Split event positions into batches.

    Args:
        sizes: [E] hits per event.
        batch_size: events per batch (used when ``hits_per_batch`` is 0).
        shuffle: draw a new random order (from ``rng``) of events and of batches.
        rng: the seeded generator for the shuffles.
        sort_window: with ``sort_window > 1``, events are (after shuffling) sorted by
            size within windows of ``sort_window`` batches and batches are cut inside a
            window, so each batch holds events of similar size and little compute goes
            to padding; the batch order is then shuffled again. ``sort_window=1`` gives
            plain random batches.
        hits_per_batch: if > 0, a hit budget: each batch holds as many events as fit in
            ``hits_per_batch`` hits in total (an event larger than the budget forms a
            batch on its own), instead of ``batch_size`` events.

    Returns:
        Arrays of event positions, every event exactly once.
    """
    n = len(sizes)
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    if hits_per_batch > 0:
        mean_size = max(1.0, float(np.mean(sizes))) if n else 1.0
        events_per_batch = max(1, int(hits_per_batch / mean_size))
    else:
        events_per_batch = batch_size
    window = events_per_batch * max(1, sort_window)
    batches: list[np.ndarray] = []
    for begin in range(0, n, window):
        chunk = order[begin : begin + window]
        if sort_window > 1:
            chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        if hits_per_batch > 0:
            cuts = _hit_budget_cuts(sizes[chunk], hits_per_batch)
        else:
            cuts = np.arange(batch_size, len(chunk), batch_size)
        batches.extend(np.split(chunk, cuts))
    if shuffle and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _hit_budget_cuts(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Greedy split points of ``sizes`` (in order) so that each part sums to <= budget.

    One ``searchsorted`` per batch, not per event.
    """
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    cuts = []
    start = 0
    while start < len(sizes):
        # Largest end with cumulative[end] - cumulative[start] <= budget; at least one event.
        end = int(np.searchsorted(cumulative, cumulative[start] + budget, side="right")) - 1
        start = max(end, start + 1)
        cuts.append(start)
    return np.asarray(cuts[:-1], dtype=np.int64)


@dataclass
class BatchPlan:
    """An epoch's batches, uploaded to the device in one copy.

    Batch i holds the events ``index[starts[i]:starts[i + 1]]`` (positions in a
    DeviceEvents); ``n_hits[i]`` and ``max_len[i]`` are the batch's total and largest
    event size, kept on the host, so building a batch never waits for the device.
    """

    index: Tensor  # [sum of batch sizes] int64, on the data's device
    starts: np.ndarray  # [n_batches + 1] int64
    n_hits: np.ndarray  # [n_batches] int64
    max_len: np.ndarray  # [n_batches] int64

    @classmethod
    def from_batches(
        cls, batches: list[np.ndarray], sizes: np.ndarray, device: torch.device | str
    ) -> BatchPlan:
        """Plan ``batches`` (arrays of event positions) of events with host ``sizes``."""
        lengths = [len(b) for b in batches]
        flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        batch_of_event = np.repeat(np.arange(len(batches)), lengths)
        event_sizes = sizes[flat]
        n_hits = np.bincount(batch_of_event, weights=event_sizes, minlength=len(batches))
        max_len = np.zeros(len(batches), dtype=np.int64)
        np.maximum.at(max_len, batch_of_event, event_sizes)
        return cls(
            index=torch.as_tensor(flat, dtype=torch.int64).to(device),
            starts=starts,
            n_hits=n_hits.astype(np.int64),
            max_len=max_len,
        )

    def __len__(self) -> int:
        return len(self.starts) - 1

    def batch(self, data: DeviceEvents, i: int, packed: bool) -> Batch:
        """Batch ``i`` of ``data``, packed or padded."""
        index = self.index[int(self.starts[i]) : int(self.starts[i + 1])]
        if packed:
            return packed_batch(data, index, int(self.n_hits[i]), int(self.max_len[i]))
        return padded_batch(data, index, int(self.max_len[i]))
