"""Hit tables: the one per-hit data contract, its writer and reader, and the column checks
every data file reader shares.

A *hit table* has one row per hit. Converted TrackML sets and derived files (refiner groups,
domain-decomposition regions of TrackML data) are hit tables on disk; a REDVID CSV becomes
one when it is read (``redvid_format``). The on-disk contract:

==============  =========  ===============================================================
column          dtype      meaning
==============  =========  ===============================================================
event_id        int64      event id, unique within the data set
hit_id          int64      hit id, unique within an event (TrackML: the ORIGINAL hit_id)
particle_id     int64      particle id, 0 = noise
weight          float32    truth weight (TrackML: the original one, not renormalised)
x, y, z         float32    hit position (TrackML: mm; model inputs, ``INPUT_COLUMNS``)
theta           float32    arccos(pz / p) of the particle's raw initial momentum, in [0, pi]
sin_phi         float32    sin(atan2(py, px))
cos_phi         float32    cos(atan2(py, px))
q               float32    particle charge, -1 or +1
source_event    int64      original event number the event was drawn from
volume_id       int16      detector volume (TrackML pixels: ``PIXEL_VOLUMES``)
layer_id        int16      layer within the volume
module_id       int32      module within the layer
pt              float32    transverse momentum sqrt(px^2 + py^2), GeV
eta             float32    momentum pseudorapidity -ln tan(theta / 2)
==============  =========  ===============================================================

Targets, pt and eta are NaN for noise hits. A derived file may carry further columns after
these; ``write_hit_table`` writes them and ``read_hit_table`` keeps them. Files are
``.parquet`` (zstd, typed, columnar), ``.csv.gz`` or ``.csv``, written atomically.

The column checks (``require_columns``, ``require_numeric``, ``require_finite``,
``require_integral``) raise ``UserError`` naming the file, the column and the first event
(and file line) holding a bad value.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_processing.common import atomic_write, read_csv
from data_processing.errors import UserError

INPUT_COLUMNS = ("x", "y", "z")
TARGET_COLUMNS = ("theta", "sin_phi", "cos_phi", "q")

#: Pixel detector volumes of the TrackML detector (the one definition in the project).
PIXEL_VOLUMES = (7, 8, 9)

#: The hit table contract: column -> numpy dtype, in output column order (read-only).
HIT_TABLE_DTYPES: Mapping[str, str] = types.MappingProxyType(
    {
        "event_id": "int64",
        "hit_id": "int64",
        "particle_id": "int64",
        "weight": "float32",
        "x": "float32",
        "y": "float32",
        "z": "float32",
        "theta": "float32",
        "sin_phi": "float32",
        "cos_phi": "float32",
        "q": "float32",
        "source_event": "int64",
        "volume_id": "int16",
        "layer_id": "int16",
        "module_id": "int32",
        "pt": "float32",
        "eta": "float32",
    }
)
HIT_TABLE_COLUMNS = tuple(HIT_TABLE_DTYPES)
#: Columns every hit table must have; the rest of ``HIT_TABLE_COLUMNS`` are optional extras.
REQUIRED_HIT_TABLE_COLUMNS = (
    "event_id",
    "hit_id",
    "particle_id",
    "weight",
    *INPUT_COLUMNS,
    *TARGET_COLUMNS,
)

# Required columns of the TrackML files, with their kind ("i" integer, "f" float).
#: Columns every loaded hit table has besides its inputs and targets.
CORE_COLUMNS = ("event_id", "hit_id", "particle_id", "weight")
# Rows buffered before a parquet row group is written: big enough for fast column reads,
# small enough that converting many full events never holds the whole data set in memory.
_ROW_GROUP_ROWS = 1 << 20
#: Row i of a CSV read by pandas is line i + 2 of the file (line 1 is the header).
CSV_FIRST_DATA_LINE = 2


# --------------------------------------------------------------------------------------
# Column checks shared by every reader
# --------------------------------------------------------------------------------------


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    """Raise UserError naming ``source`` and the missing ones unless ``frame`` has ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def rows_where(frame: pd.DataFrame, bad: np.ndarray, first_line: int | None) -> str:
    """'first in event(s) [...]' for the rows ``bad`` ([N] bool, some True) of ``frame``,
    plus the file line of the first one when the rows are lines of a file."""
    events = pd.unique(frame["event_id"].to_numpy()[bad])[:5].tolist()
    text = f"first in event(s) {events}"
    if first_line is not None:
        text += f" (line {int(np.flatnonzero(bad)[0]) + first_line})"
    return text


def require_numeric(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> pd.DataFrame:
    """``frame`` with ``columns`` as numbers: int64 where pandas read integers, else float64.

    A cell that is not a number (text such as "abc"; an empty cell stays NaN for the
    finiteness checks) raises UserError naming ``source``, the column, the value and
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
            raise UserError(
                f"{source}: column {column!r} has {int(bad.sum())} non-numeric value(s) "
                f"such as {example!r}, {rows_where(frame, bad, first_line)}"
            )
        converted[column] = numbers.to_numpy(np.float64)
    return frame.assign(**converted)


def require_finite(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> None:
    """Raise UserError naming ``source``, the column and the first event of a NaN/inf."""
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise UserError(
                f"{source}: column {column!r} has {int(bad.sum())} NaN/inf value(s), "
                f"{rows_where(frame, bad, first_line)}"
            )


def require_integral(
    frame: pd.DataFrame, columns: tuple[str, ...], source: str, first_line: int | None = None
) -> None:
    """Raise UserError for an id column holding a fractional or out-of-int64 value.

    Casting 0.5 to int64 would silently merge it into id 0. Expects finite values.
    """
    for column in columns:
        values = frame[column].to_numpy()
        if values.dtype.kind in "iu":
            continue
        bad = (values != np.floor(values)) | (np.abs(values) >= 2.0**63)
        if bad.any():
            raise UserError(
                f"{source}: column {column!r} must hold whole numbers (it is an id) but has "
                f"{int(bad.sum())} other value(s) such as {values[bad][0].item()!r}, "
                f"{rows_where(frame, bad, first_line)}"
            )


# --------------------------------------------------------------------------------------
# Writing and reading hit tables
# --------------------------------------------------------------------------------------


def table_format(path: Path) -> str:
    """Storage format ("parquet" or "csv") from the file name; UserError otherwise."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv.gz", ".csv")):
        return "csv"
    raise UserError(f"{path}: unsupported hit table format (use .parquet, .csv.gz or .csv)")


def arrow_schema(
    metadata: Mapping[bytes, bytes | str] | None = None, extra: pd.DataFrame | None = None
) -> pa.Schema:
    """Arrow schema of the hit table: the contract columns (``HIT_TABLE_DTYPES``), then
    the columns of ``extra`` with the types pyarrow gives them; ``metadata`` (e.g. the
    TrackML sub-event config) is kept as file metadata."""
    fields = [
        pa.field(name, pa.from_numpy_dtype(np.dtype(dtype)))
        for name, dtype in HIT_TABLE_DTYPES.items()
    ]
    if extra is not None:
        fields += list(pa.Schema.from_pandas(extra, preserve_index=False))
    schema = pa.schema(fields)
    if metadata is not None:
        schema = schema.with_metadata(dict(metadata))
    return schema


class HitTableWriter:
    """Streams hit tables to ``<out>`` through ``common.atomic_write`` (a temporary file
    in the same directory, renamed into place only on success), so readers never see a
    half-written data set. Use as a context manager.

    Every table written must have exactly the writer's columns: ``HIT_TABLE_COLUMNS``
    followed by ``extra_columns`` (in any order; they are written in that one).
    """

    def __init__(
        self,
        out_path: Path,
        metadata: Mapping[bytes, bytes | str] | None = None,
        extra_columns: pd.DataFrame | None = None,
    ) -> None:
        """``extra_columns``: a frame (any rows, e.g. none) whose columns and dtypes are
        the extra columns to write after the contract ones; None = none."""
        self.out_path = out_path
        self.format = table_format(out_path)
        self.schema = arrow_schema(metadata, extra_columns)
        self.columns = tuple(self.schema.names)
        self._buffer: list[pd.DataFrame] = []
        self._buffered_rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: Any = None
        self._wrote_header = False
        self._files = contextlib.ExitStack()  # the open file, set up by __enter__

    def __enter__(self) -> HitTableWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_write(self.out_path))
            if self.format == "parquet":
                # zstd: ~2x smaller than snappy on these float columns at similar read speed.
                self._parquet = pq.ParquetWriter(tmp, self.schema, compression="zstd")
            elif self.out_path.name.lower().endswith(".gz"):
                self._csv = gzip.open(tmp, "wt", newline="")
            else:
                self._csv = open(tmp, "w", newline="")
            # Unwound last in, first out: the file is closed before it is renamed.
            stack.callback(self._close)
            self._files = stack.pop_all()
        return self

    def write(self, table: pd.DataFrame) -> None:
        """Queue one hit table (the writer's ``columns``) for writing."""
        missing = [c for c in self.columns if c not in table.columns]
        unexpected = [c for c in table.columns if c not in self.columns]
        problems = [f"lacks column(s) {missing}"] if missing else []
        if unexpected:
            problems.append(f"has column(s) {unexpected} the file was not opened with")
        if problems:
            raise UserError(f"{self.out_path}: hit table to write {' and '.join(problems)}")
        self._buffer.append(table[list(self.columns)])
        self._buffered_rows += len(table)
        if self._buffered_rows >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        frame = pd.concat(self._buffer, ignore_index=True)
        self._buffer, self._buffered_rows = [], 0
        if self._parquet is not None:
            arrow = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            self._parquet.write_table(arrow)
        else:
            frame.to_csv(self._csv, header=not self._wrote_header, index=False)
            self._wrote_header = True

    def _close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            # Close, then rename into place; if the last flush fails, remove instead.
            with self._files:
                self._flush()
        else:
            # Close and remove the temporary file; the exception propagates.
            self._files.__exit__(exc_type, exc, tb)


def write_hit_table(table: pd.DataFrame, out_path: str | os.PathLike[str]) -> None:
    """Write one hit table atomically to .parquet, .csv.gz or .csv.

    ``table`` must have ``HIT_TABLE_COLUMNS`` (else UserError naming the file and the
    missing columns); they are written first, in that order, then every other column of
    ``table`` (``read_hit_table`` keeps such extras, so nothing is dropped).
    """
    # The extras' types come from their values (an empty frame would type an object
    # column of strings as null).
    extra = table[[c for c in table.columns if c not in HIT_TABLE_DTYPES]]
    with HitTableWriter(Path(out_path), extra_columns=extra) as writer:
        writer.write(table)


def read_hit_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a converted data set (.parquet, .csv.gz or .csv) and validate the contract.

    Output: the hit table with ``REQUIRED_HIT_TABLE_COLUMNS`` (and any of the optional
    extras present) cast to ``HIT_TABLE_DTYPES``, extra unknown columns kept as they are,
    sorted by event_id with the file's row order kept within an event (stable sort), index
    0..n-1.

    Raises FileNotFoundError for a missing file and UserError naming the file (and column)
    for: unsupported suffix, unreadable file, empty table, missing or non-numeric column,
    NaN in an id/integer column, x/y/z or weight, NaN targets on hits with particle_id != 0,
    a charge q not in {-1, +1}, or a hit_id repeated within a sub-event.
    """
    file = Path(path)
    frame = _read_table_file(file)
    if frame.empty:
        raise UserError(f"{file}: the hit table is empty")
    missing = [c for c in REQUIRED_HIT_TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"{file}: missing hit table column(s) {', '.join(missing)} "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    frame = _with_contract_dtypes(frame, file)
    _check_contract_values(frame, file)
    return frame.sort_values("event_id", kind="stable").reset_index(drop=True)


def _read_table_file(file: Path) -> pd.DataFrame:
    """The raw table of a .parquet/.csv[.gz] file; UserError if it cannot be read."""
    fmt = table_format(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: hit table not found")
    if fmt == "csv":
        return read_csv(file, "csv hit table")
    try:
        return pd.read_parquet(file, engine="pyarrow")
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{file}: not a readable parquet hit table ({e})") from e


def _with_contract_dtypes(frame: pd.DataFrame, file: Path) -> pd.DataFrame:
    """``frame`` with every contract column present cast to ``HIT_TABLE_DTYPES``.

    UserError naming ``file`` and the column for a non-numeric column, or a NaN or a
    fractional value in an integer column.
    """
    for name, dtype in HIT_TABLE_DTYPES.items():
        if name not in frame.columns:
            continue
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise UserError(f"{file}: column {name} is not numeric (dtype {col.dtype})")
        if np.dtype(dtype).kind == "i":
            if col.isna().any():
                raise UserError(f"{file}: column {name} has {int(col.isna().sum())} NaN value(s)")
            if not pd.api.types.is_integer_dtype(col):
                raise UserError(f"{file}: column {name} must hold integers (dtype {col.dtype})")
        frame[name] = col.astype(dtype)
    return frame


def _check_contract_values(frame: pd.DataFrame, file: Path) -> None:
    """UserError naming ``file`` for NaN positions or weights, NaN targets or a charge
    other than +-1 on particle hits, or a hit_id repeated within an event."""
    for name in (*INPUT_COLUMNS, "weight"):
        n_nan = int(frame[name].isna().sum())
        if n_nan:
            raise UserError(f"{file}: column {name} has {n_nan} NaN value(s)")
    is_particle = frame["particle_id"].to_numpy() != 0
    for name in TARGET_COLUMNS:
        bad = is_particle & frame[name].isna().to_numpy()
        if bad.any():
            raise UserError(
                f"{file}: column {name} is NaN on {int(bad.sum())} hit(s) of particles "
                f"(particle_id != 0), e.g. event_id {int(frame['event_id'].to_numpy()[bad][0])}"
            )
    if not np.isin(frame["q"].to_numpy()[is_particle], (-1.0, 1.0)).all():
        raise UserError(f"{file}: column q holds values other than -1/+1 for particle hits")
    duplicated = frame.duplicated(["event_id", "hit_id"])
    if duplicated.any():
        raise UserError(
            f"{file}: {int(duplicated.sum())} hit_id(s) repeated within a sub-event, e.g. "
            f"event_id {int(frame.loc[duplicated, 'event_id'].iloc[0])}"
        )
