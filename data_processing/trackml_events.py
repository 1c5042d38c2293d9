"""Reading real TrackML events (SPEC section 3.2): ``<prefix>-{hits,truth,particles}.csv[.gz]``.

``read_event`` reads and validates one event (Kaggle or Codalab columns) into a
``TrackMLEvent``; ``list_events`` finds the events of a directory. Every problem with the
files raises ``UserError`` (or FileNotFoundError for a missing file) naming the file and
column. ``trackml_data`` draws sub-events from the events read here.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.common import read_csv
from data_processing.errors import UserError

_FILE_COLUMNS: Mapping[str, tuple[tuple[str, str], ...]] = types.MappingProxyType(
    {
        "hits": (
            ("hit_id", "i"),
            ("x", "f"),
            ("y", "f"),
            ("z", "f"),
            ("volume_id", "i"),
            ("layer_id", "i"),
            ("module_id", "i"),
        ),
        "truth": (
            ("hit_id", "i"),
            ("particle_id", "i"),
            ("tx", "f"),
            ("ty", "f"),
            ("tz", "f"),
            ("tpx", "f"),
            ("tpy", "f"),
            ("tpz", "f"),
            ("weight", "f"),
        ),
        "particles": (
            ("particle_id", "i"),
            ("vx", "f"),
            ("vy", "f"),
            ("vz", "f"),
            ("px", "f"),
            ("py", "f"),
            ("pz", "f"),
            ("q", "i"),
            ("nhits", "i"),
        ),
    }
)
_OPTIONAL_FILE_COLUMNS: Mapping[str, tuple[tuple[str, str], ...]] = types.MappingProxyType(
    {"hits": (), "truth": (), "particles": (("particle_type", "i"),)}
)
_EVENT_FILE_RE = re.compile(r"^(?P<prefix>.+)-(?P<kind>hits|truth|particles|cells)\.csv(\.gz)?$")
_LISTED_EVENT_RE = re.compile(r"^(?P<prefix>event(?P<number>\d+))-hits\.csv(\.gz)?$")


@dataclass
class TrackMLEvent:
    """One TrackML event as read from its CSV files.

    Attributes:
        event_id: TrackML event number (parsed from the trailing digits of the file prefix).
        hits: one row per hit: hit_id (int64), x, y, z (float64, mm), volume_id, layer_id,
            module_id (int64), in file order.
        truth: one row per hit: hit_id, particle_id (int64, 0 = noise), tx, ty, tz (mm),
            tpx, tpy, tpz (GeV), weight (float64).
        particles: one row per particle: particle_id (int64), [particle_type (int64),
            Codalab files only], vx, vy, vz (mm), px, py, pz (GeV, float64), q, nhits (int64).
        source: the file prefix the event was read from, used in messages ("" if built in
            memory).
    """

    event_id: int
    hits: pd.DataFrame
    truth: pd.DataFrame
    particles: pd.DataFrame
    source: str = ""

    @property
    def name(self) -> str:
        """Human-readable name for messages: the file prefix, else ``event <id>``."""
        return self.source or f"event {self.event_id}"


def event_prefix(path_or_prefix: str | os.PathLike[str]) -> Path:
    """Turn ``dir/event000000001`` or ``dir/event000000001-hits.csv.gz`` into the prefix."""
    path = Path(path_or_prefix)
    if path.is_dir():
        raise UserError(
            f"{path} is a directory; pass an event prefix such as {path}/event000000001 "
            "(list_events() finds them)"
        )
    match = _EVENT_FILE_RE.match(path.name)
    return path.with_name(match["prefix"]) if match else path


def _event_number(prefix: Path) -> int:
    """TrackML event number from the trailing digits of a prefix (``event000000001`` -> 1)."""
    match = re.search(r"(\d+)$", prefix.name)
    if match is None:
        raise UserError(
            f"cannot read an event number from the prefix {prefix.name!r} (it must end in "
            "digits); pass event_id= to read_event"
        )
    return int(match.group(1))


def _find_event_file(prefix: Path, kind: str) -> Path:
    """Path of ``<prefix>-<kind>.csv.gz`` or ``.csv``; FileNotFoundError if neither exists."""
    candidates = [prefix.with_name(f"{prefix.name}-{kind}.csv{ext}") for ext in (".gz", "")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"TrackML event {prefix}: {kind} file missing (looked for "
        f"{' and '.join(str(c) for c in candidates)})"
    )


def validate_event_table(frame: pd.DataFrame, kind: str, label: str) -> pd.DataFrame:
    """Validate one TrackML table and return it with normalised dtypes.

    Inputs: ``frame`` as read from the ``kind`` file ("hits", "truth" or "particles");
    ``label`` names the file in error messages. Output: the required (and known optional)
    columns only, integers as int64 and floats as float64. Raises UserError naming the
    file and column for a missing column, a non-numeric column, a fractional value in an
    integer column, a NaN, a duplicated id or an empty table.
    """
    if frame.empty:
        raise UserError(f"{label}: the {kind} table is empty")
    spec = _FILE_COLUMNS[kind]
    missing = [name for name, _ in spec if name not in frame.columns]
    if missing:
        raise UserError(
            f"{label}: missing column(s) {', '.join(missing)} in the {kind} table "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    optional = [(n, k) for n, k in _OPTIONAL_FILE_COLUMNS[kind] if n in frame.columns]
    out = {}
    for name, kind_code in (*spec, *optional):
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise UserError(f"{label}: column {name} is not numeric (dtype {col.dtype})")
        values = col.to_numpy()
        n_nan = int(pd.isna(col).sum())
        if n_nan:
            raise UserError(f"{label}: column {name} has {n_nan} NaN value(s)")
        if kind_code == "i":
            # A float column here means text like "1.5" or a lost integer: not the format.
            if not pd.api.types.is_integer_dtype(col):
                raise UserError(
                    f"{label}: column {name} must hold integers, found dtype {col.dtype}"
                )
            out[name] = values.astype(np.int64, copy=False)
        else:
            out[name] = values.astype(np.float64, copy=False)
    result = pd.DataFrame(out)
    id_column = "particle_id" if kind == "particles" else "hit_id"
    duplicated = result[id_column].duplicated()
    if duplicated.any():
        example = int(result.loc[duplicated, id_column].iloc[0])
        raise UserError(
            f"{label}: {int(duplicated.sum())} duplicated {id_column} value(s), e.g. {example}"
        )
    return result


def _read_csv(path: Path, kind: str) -> pd.DataFrame:
    """Read and validate one TrackML CSV file (see ``validate_event_table`` for the output)."""
    return validate_event_table(read_csv(path, f"{kind} CSV file"), kind, str(path))


def validate_event_consistency(
    hits: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame, labels: Sequence[str]
) -> None:
    """Cross-file checks: hits and truth describe the same hit_ids; every particle that
    left a hit is in the particles table, with charge +-1 and non-zero momentum.

    ``labels`` names the hits, truth and particles files in messages. Raises UserError.
    """
    hits_label, truth_label, particles_label = labels
    in_truth = hits["hit_id"].isin(truth["hit_id"])
    if not in_truth.all():
        example = int(hits.loc[~in_truth, "hit_id"].iloc[0])
        raise UserError(
            f"{hits_label}: {int((~in_truth).sum())} hit(s) without truth rows in "
            f"{truth_label}, e.g. hit_id {example}"
        )
    if len(truth) != len(hits):
        extra = truth.loc[~truth["hit_id"].isin(hits["hit_id"]), "hit_id"]
        raise UserError(
            f"{truth_label}: {len(extra)} truth row(s) for hit_ids absent from {hits_label}, "
            f"e.g. hit_id {int(extra.iloc[0])}"
        )
    hit_particles = pd.unique(truth.loc[truth["particle_id"] != 0, "particle_id"])
    known = pd.Index(particles["particle_id"]).get_indexer(hit_particles)
    if (known < 0).any():
        raise UserError(
            f"{truth_label}: {int((known < 0).sum())} particle_id(s) with hits are absent "
            f"from {particles_label}, e.g. {int(hit_particles[known < 0][0])}"
        )
    charge = particles["q"].to_numpy()[known]
    if not np.isin(charge, (-1, 1)).all():
        bad = hit_particles[~np.isin(charge, (-1, 1))]
        raise UserError(
            f"{particles_label}: {len(bad)} particle(s) with hits have charge q not in "
            f"{{-1, +1}}, e.g. particle_id {int(bad[0])}"
        )
    momentum = particles[["px", "py", "pz"]].to_numpy()[known]
    zero = ~(np.abs(momentum) > 0).any(axis=1)
    if zero.any():
        raise UserError(
            f"{particles_label}: {int(zero.sum())} particle(s) with hits have zero momentum, "
            f"e.g. particle_id {int(hit_particles[zero][0])}"
        )


def read_event(path_or_prefix: str | os.PathLike[str], event_id: int | None = None) -> TrackMLEvent:
    """Read and validate one TrackML event.

    Inputs: a prefix such as ``dir/event000000001`` or ``dir/test_001``, or the path of any
    of the event's files (``dir/event000000001-hits.csv.gz``). The hits, truth and
    particles files are looked up as ``<prefix>-<kind>.csv.gz`` then ``.csv``; cells are
    not needed. Both the Kaggle particles columns and the Codalab ones (with
    particle_type) are accepted. ``event_id`` defaults to the trailing digits of the
    prefix.

    Output: a ``TrackMLEvent`` (see its docstring for columns and dtypes).

    Raises FileNotFoundError for a missing file and UserError (naming the file and
    column) for a missing or non-numeric column, NaN values, duplicated ids, hits without
    truth rows (or the reverse), or particles with hits that are absent from the particles
    table.
    """
    prefix = event_prefix(path_or_prefix)
    # Files first: a mistyped path is reported as missing, not as a bad event number.
    paths = {kind: _find_event_file(prefix, kind) for kind in ("hits", "truth", "particles")}
    number = _event_number(prefix) if event_id is None else int(event_id)
    frames = {kind: _read_csv(path, kind) for kind, path in paths.items()}
    validate_event_consistency(
        frames["hits"],
        frames["truth"],
        frames["particles"],
        [str(paths[k]) for k in ("hits", "truth", "particles")],
    )
    return TrackMLEvent(
        event_id=number,
        hits=frames["hits"],
        truth=frames["truth"],
        particles=frames["particles"],
        source=str(prefix),
    )


def list_events(directory: str | os.PathLike[str]) -> list[Path]:
    """Prefixes of the events in ``directory``, sorted by event number.

    Input: a directory holding ``eventNNNNNNNNN-hits.csv[.gz]`` files (other files, and
    events not named ``event`` + digits, are ignored: pass those to ``read_event`` by
    prefix). Output: ``[directory / "event000000001", ...]``, one entry per event even if
    both ``.csv`` and ``.csv.gz`` exist. Raises NotADirectoryError if it is not a directory.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    numbered: dict[str, int] = {}
    for entry in root.iterdir():
        match = _LISTED_EVENT_RE.match(entry.name)
        if match:
            numbered[match["prefix"]] = int(match["number"])
    return [root / name for name in sorted(numbered, key=lambda n: (numbered[n], n))]
