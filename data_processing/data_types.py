"""The data types a run can read, each described once: how its files are read and written.

Every place that used to ask ``data_type == "trackml"`` asks the registry instead:
``data_type_named(name)`` gives the ``DataType`` with its file format, reader, hit-table
builder, input and target columns, how a row's particle (and noise) is read, its length
unit and whether training can simulate a default set of it. ``DATA_TYPES`` is the tuple
of the names (command-line choices). The published HDBSCAN settings are keyed by
``"<name>:<tracks>"`` (``evaluation.clustering.PUBLISHED_HDBSCAN``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from data_processing.errors import UserError
from data_processing.hit_table import (
    INPUT_COLUMNS,
    TARGET_COLUMNS,
    read_hit_table,
)
from data_processing.redvid_format import (
    REDVID_INPUT_COLUMNS,
    particle_ids,
    read_redvid_rows,
    redvid_hit_table,
    redvid_target_columns,
)


@dataclass(frozen=True)
class DataType:
    """One data type: what its files look like and how the loader reads them.

    name: the ``--data_type`` value.
    file_format: "redvid" (``;``-separated REDVID CSV, ``redvid_format``) or "hit_table"
        (a converted hit table, ``hit_table``).
    simulated: training simulates a default set of this type when no file is given.
    length_unit: unit of the hit coordinates ("m" or "mm").
    derived_suffix: file suffix of a derived file (refiner groups, regions) of this type.
    input_columns: hit-table columns fed to the model.
    read_rows: (path) -> the file's rows in its own layout, validated.
    hit_table: (rows, source) -> the loader's hit table (``dataset`` module docstring).
    target_columns: (hit table) -> the regression targets of this type.
    rows_particle_ids: (rows, source) -> [N] int64 particle id of every row, 0 = noise.
    """

    name: str
    file_format: str
    simulated: bool
    length_unit: str
    derived_suffix: str
    input_columns: tuple[str, ...]
    read_rows: Callable[[Path], pd.DataFrame] = field(repr=False)
    hit_table: Callable[[pd.DataFrame, str], pd.DataFrame] = field(repr=False)
    target_columns: Callable[[pd.DataFrame], tuple[str, ...]] = field(repr=False)
    rows_particle_ids: Callable[[pd.DataFrame, str], np.ndarray] = field(repr=False)


def _redvid(name: str) -> DataType:
    """A REDVID-style simulated type: linear or helical tracks, lengths in metres."""
    return DataType(
        name=name,
        file_format="redvid",
        simulated=True,
        length_unit="m",
        derived_suffix=".csv",
        input_columns=REDVID_INPUT_COLUMNS,
        read_rows=lambda path: read_redvid_rows(path, name),
        hit_table=lambda rows, source: redvid_hit_table(rows, name, source),
        target_columns=lambda table: redvid_target_columns(name, table),
        rows_particle_ids=particle_ids,
    )


_TRACKML = DataType(
    name="trackml",
    file_format="hit_table",
    simulated=False,
    length_unit="mm",
    derived_suffix=".parquet",
    input_columns=INPUT_COLUMNS,
    read_rows=read_hit_table,
    # A converted TrackML file is a hit table already.
    hit_table=lambda rows, source: rows,
    target_columns=lambda table: TARGET_COLUMNS,
    rows_particle_ids=lambda rows, source: rows["particle_id"].to_numpy(np.int64),
)

#: Every data type by name (read-only).
REGISTRY: Mapping[str, DataType] = MappingProxyType(
    {t.name: t for t in (_redvid("linear"), _redvid("helical"), _TRACKML)}
)
#: The data type names, in the order the command lines list them.
DATA_TYPES: tuple[str, ...] = tuple(REGISTRY)


def data_type_named(name: str) -> DataType:
    """The registered ``DataType`` called ``name``; UserError for an unknown name."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown data_type {name!r}; use one of {DATA_TYPES}") from None
