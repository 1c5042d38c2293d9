"""The REDVID CSV format: its columns, how a file is validated and read, and how it is written.

The simulator (``redvid``) writes this layout and the loader (``dataset``) reads it, so both
take the columns from here. One row per hit, ``;``-separated, columns ``REDVID_COLUMNS``:
the hit (``hit_r``, ``hit_theta`` = the azimuth, ``hit_z``; ``sub_detector_*``), its track
(``track_id``, ``track_type``) and the track's parameters (``*_const`` and ``*_coeff`` of
r = a t, phi = phi0 + d t, z = b t). Published linear sets carry the direction in
``theta_d``, ``z_d``, ``r_d`` instead of the coefficients; both are read. Lengths are in the
file's unit (the simulator writes metres).

Noise. A row is a noise hit when the row itself says so: ``track_id`` 0 and no track
parameter (every parameter column present, ``REDVID_TRACK_PARAMETER_COLUMNS``, is 0 or
empty), which is what the simulator writes. A file that numbers its tracks from 0 has
rows with ``track_id`` 0 that carry real parameters: those are a track, and the whole
file's track ids are then read shifted by one (``particle_id = track_id + 1``; noise
stays 0), so no track is lost (``particle_ids``).

Reading (``read_redvid_rows``) keeps the file's own columns, validated; ``redvid_hit_table``
turns them into the loader's hit table: event_id, hit_id, particle_id (0 = noise), weight
(1 for track hits, 0 for noise), inputs x, y, z = (r cos(theta), r sin(theta), z) and the
targets of the data type (``redvid_target_columns``). Every problem with a file raises
``UserError`` naming the file, the column, the value and the first event and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from data_processing.common import read_csv
from data_processing.errors import UserError
from data_processing.hit_table import (
    CSV_FIRST_DATA_LINE,
    require_columns,
    require_finite,
    require_integral,
    require_numeric,
    rows_where,
)

REDVID_INPUT_COLUMNS = ("x", "y", "z")
# The constants and coefficients of a track's r = a t, phi = phi0 + d t, z = b t.
REDVID_MODEL_COLUMNS = (
    "radial_const",
    "azimuthal_const",
    "pitch_const",
    "radial_coeff",
    "azimuthal_coeff",
    "pitch_coeff",
)
REDVID_COLUMNS = (
    "event_id",
    "sub_detector_id",
    "sub_detector_type",
    "track_id",
    "track_type",
    *REDVID_MODEL_COLUMNS,
    "hit_id",
    "hit_r",
    "hit_theta",
    "hit_z",
)
# Published linear sets carry the direction in these columns instead of the coefficients.
REDVID_LINEAR_DIRECTION_COLUMNS = ("theta_d", "z_d", "r_d")
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
# Columns that hold a track's parameters. A track has a non-zero one (radial_coeff a > 0,
# or a non-zero direction); a noise row has none (the simulator writes them all 0).
REDVID_TRACK_PARAMETER_COLUMNS = (*REDVID_MODEL_COLUMNS, *REDVID_LINEAR_DIRECTION_COLUMNS)
LINEAR_TARGET_COLUMNS = ("theta", "sin_phi", "cos_phi")
HELICAL_TARGET_COLUMNS = ("radial_coeff", "pitch_coeff", "azimuthal_coeff")
# Added to the helical targets when the file's tracks start at a random azimuth phi0.
PHI0_TARGET_COLUMNS = ("sin_phi0", "cos_phi0")


def noise_rows(raw: pd.DataFrame) -> np.ndarray:
    """[N] bool: the rows that are noise hits, from the rows themselves.

    A row is noise when its ``track_id`` is 0 and none of its track parameters
    (``REDVID_TRACK_PARAMETER_COLUMNS`` present in ``raw``) is a non-zero number. A file
    without parameter columns says nothing more than its ids: ``track_id`` 0 is noise.
    """
    carries_track = np.zeros(len(raw), dtype=bool)
    for column in REDVID_TRACK_PARAMETER_COLUMNS:
        if column in raw.columns:
            values = raw[column].to_numpy(np.float64)
            carries_track |= np.isfinite(values) & (values != 0)
    return (raw["track_id"].to_numpy() == 0) & ~carries_track


def particle_ids(raw: pd.DataFrame, source: str) -> np.ndarray:
    """[N] int64 particle id of every row of ``raw`` (``read_redvid_rows``), 0 = noise.

    The file's ``track_id``; if the file numbers its tracks from 0 (some row with
    ``track_id`` 0 carries track parameters, see ``noise_rows``), ``track_id + 1`` for
    every track row, so that track 0 stays a track. Raises UserError naming ``source``
    when such a file also uses ``track_id`` -1, which the shift would turn into noise.
    """
    track_id = raw["track_id"].to_numpy(np.int64)
    noise = noise_rows(raw)
    numbered_from_zero = (track_id == 0) & ~noise
    if not numbered_from_zero.any():
        return track_id  # every row with track_id 0 is noise already
    minus_one = (track_id == -1) & ~noise
    if minus_one.any():
        raise UserError(
            f"{source}: rows with track_id 0 carry track parameters (tracks numbered from "
            f"0, {rows_where(raw, numbered_from_zero, CSV_FIRST_DATA_LINE)}) and track_id -1 "
            f"is used too ({rows_where(raw, minus_one, CSV_FIRST_DATA_LINE)}); mark noise "
            "hits with track_id 0 and every coefficient column 0 or empty, and number the "
            "tracks from 0 or 1"
        )
    return np.where(noise, 0, track_id + 1).astype(np.int64)


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
        raise UserError(
            f"{source}: read as {data_type!r} data, but column 'track_type' says {found} "
            f"on {int(bad.sum())} track hit(s), {rows_where(frame, bad, first_line)}; "
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
        UserError naming the file (and the column, value and first event or line) for:
        an unreadable, empty or not ``;``-separated file, a missing column, a non-numeric
        cell, NaN/inf in an id or hit coordinate, a fractional id, or a ``track_type``
        other than ``data_type`` on a track hit.
    """
    source = str(path)
    if data_type not in REDVID_TRACK_TYPES:
        raise UserError(f"{source}: REDVID data_type must be linear or helical, not {data_type!r}")
    raw = read_csv(path, "';'-separated REDVID CSV file", sep=";")
    if len(raw.columns) < 2:
        raise UserError(
            f"{source}: not a ';'-separated REDVID file (header {list(raw.columns)[:3]})"
        )
    if raw.empty:
        raise UserError(f"{source}: file has a header but no hits")
    required = ("event_id", "track_id", "hit_r", "hit_theta", "hit_z")
    require_columns(raw, required, source)
    numeric = tuple(c for c in REDVID_NUMERIC_COLUMNS if c in raw.columns)
    ids = tuple(c for c in REDVID_ID_COLUMNS if c in raw.columns)
    line = CSV_FIRST_DATA_LINE
    raw = require_numeric(raw, numeric, source, line)
    # Target columns may be NaN on noise hits; their track hits are checked later.
    require_finite(raw, (*ids, "hit_r", "hit_theta", "hit_z"), source, line)
    require_integral(raw, ids, source, line)
    raw = raw.assign(**{c: raw[c].to_numpy(np.int64) for c in ids})
    if "track_type" in raw.columns:
        _require_track_type(raw, data_type, ~noise_rows(raw), source, line)
    return raw


def read_redvid_csv(path: str | Path, data_type: str) -> pd.DataFrame:
    """Read a REDVID ``;``-separated CSV (ours or anyone's) into a hit table.

    Args:
        path: the CSV file.
        data_type: ``"linear"`` or ``"helical"``; selects the target columns.

    Returns:
        Hit table with columns event_id, hit_id, particle_id (``particle_ids``, 0 = noise),
        weight (1 for track hits, 0 for noise), x, y, z and the target columns.

    Raises:
        UserError naming the file for everything ``read_redvid_rows`` rejects and for
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
            "particle_id": particle_ids(raw, source),
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

    targets = _TARGETS_OF_TRACK_MODEL[data_type](raw, source)
    for name, values in targets.items():
        # Noise hits have no track: their targets are undefined, so NaN, never used.
        table[name] = np.where(is_track, values, np.nan)
    bad = ~np.isfinite(table.loc[is_track, list(targets)].to_numpy())
    if bad.any():
        events = table.loc[is_track].loc[bad.any(axis=1), "event_id"].unique()[:5].tolist()
        raise UserError(f"{source}: NaN/inf target values for track hits in event(s) {events}")
    return table


def _linear_targets(raw: pd.DataFrame, source: str) -> dict[str, np.ndarray]:
    """(theta, sin phi, cos phi) of a straight track's direction."""
    if all(c in raw.columns for c in REDVID_LINEAR_DIRECTION_COLUMNS):
        theta = np.arctan2(raw["r_d"].to_numpy(np.float64), raw["z_d"].to_numpy(np.float64))
        phi = raw["theta_d"].to_numpy(np.float64)
    else:
        needed = ("radial_coeff", "pitch_coeff", "azimuthal_const")
        if not all(c in raw.columns for c in needed):
            raise UserError(
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
    require_columns(raw, ("radial_coeff", "pitch_coeff", "azimuthal_coeff"), source)
    targets = {
        "radial_coeff": raw["radial_coeff"].to_numpy(np.float64),
        "pitch_coeff": raw["pitch_coeff"].to_numpy(np.float64),
        "azimuthal_coeff": raw["azimuthal_coeff"].to_numpy(np.float64),
    }
    if "azimuthal_const" in raw.columns:
        phi0 = raw["azimuthal_const"].to_numpy(np.float64)
        # With a random start azimuth, (a, b, d) no longer identify a track on their own.
        if np.any(phi0[~noise_rows(raw)] != 0):
            targets["sin_phi0"] = np.sin(phi0)
            targets["cos_phi0"] = np.cos(phi0)
    return targets


# The targets of each REDVID track model (the data types this format serves).
_TARGETS_OF_TRACK_MODEL = {"linear": _linear_targets, "helical": _helical_targets}


def redvid_target_columns(data_type: str, table: pd.DataFrame) -> tuple[str, ...]:
    """Target columns of a REDVID hit table (``redvid_hit_table``) of ``data_type``."""
    if data_type == "linear":
        return LINEAR_TARGET_COLUMNS
    has_phi0 = all(c in table.columns for c in PHI0_TARGET_COLUMNS)
    return (*HELICAL_TARGET_COLUMNS, *PHI0_TARGET_COLUMNS) if has_phi0 else HELICAL_TARGET_COLUMNS


def write_redvid_csv(
    df: pd.DataFrame, path: str | Path | IO[bytes], *, header: bool = True
) -> None:
    """Write hits in the REDVID layout: ``;``-separated, no index, full float precision.

    Floats are written as their shortest round-trip representation (pyarrow's writer,
    about 7x faster than ``DataFrame.to_csv``), so reading the file back gives the same
    float64 values bit for bit.

    Args:
        df: DataFrame holding at least ``REDVID_COLUMNS``; they are written in that order.
        path: file path or an open binary stream (for appending chunks).
        header: write the header line (False when appending to a started file).
    """
    if isinstance(path, str | Path):
        with open(path, "wb") as handle:
            write_redvid_csv(df, handle, header=header)
        return
    path.write(redvid_csv_bytes(df, header=header))


def redvid_csv_bytes(df: pd.DataFrame, *, header: bool = True) -> bytes:
    """The REDVID CSV text of ``df`` (see ``write_redvid_csv``) as UTF-8 bytes."""
    missing = [c for c in REDVID_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"DataFrame lacks REDVID columns {missing}")
    head = (";".join(REDVID_COLUMNS) + "\n").encode() if header else b""
    if len(df) == 0:
        return head
    table = pa.Table.from_pandas(df[list(REDVID_COLUMNS)], preserve_index=False)
    sink = pa.BufferOutputStream()
    # The header is written by hand: pyarrow quotes header names whatever the style.
    options = pa_csv.WriteOptions(include_header=False, delimiter=";", quoting_style="none")
    pa_csv.write_csv(table, sink, options)
    return head + sink.getvalue().to_pybytes()
