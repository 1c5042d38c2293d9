"""TrackML loader and sub-event builder (SPEC sections 3.2 and 3.3).

Reads real TrackML events (``<prefix>-{hits,truth,particles}.csv[.gz]``), draws
"sub-events" of N particles from each full event (the paper's TML:10-50, 50-100, 200-500
data sets) and writes one *hit table* per data set, the contract with ``dataset.py``:

==============  =========  ===============================================================
column          dtype      meaning
==============  =========  ===============================================================
event_id        int64      sub-event id, unique within the data set
hit_id          int64      ORIGINAL TrackML hit_id (so results can be scored against truth)
particle_id     int64      TrackML particle_id, 0 = noise
weight          float32    original truth weight (not renormalised)
x, y, z         float32    hit position in mm (model inputs, ``INPUT_COLUMNS``)
theta           float32    arccos(pz / p) of the particle's raw initial momentum, in [0, pi]
sin_phi         float32    sin(atan2(py, px))
cos_phi         float32    cos(atan2(py, px))
q               float32    particle charge, -1 or +1
source_event    int64      TrackML event number the sub-event was drawn from
volume_id       int16      detector volume (pixels: 7, 8, 9)
layer_id        int16      layer within the volume
module_id       int32      module within the layer
pt              float32    transverse momentum sqrt(px^2 + py^2), GeV
eta             float32    momentum pseudorapidity -ln tan(theta / 2)
==============  =========  ===============================================================

Targets, pt and eta are NaN for noise hits. Within a sub-event the rows keep the order of
the original hits file. A derived file (refiner groups, domain-decomposition regions) may
carry further columns after these; ``write_hit_table`` writes them and ``read_hit_table``
keeps them.

Sub-events are drawn independently (each one is a fresh uniform random particle set, not a
nested prefix of one particle list as in the reference code), every hit of a chosen
particle is kept, and a proportional share of noise hits can be kept. Random streams are
derived per event from ``np.random.SeedSequence(seed, spawn_key=(event_id,))``, so the
sub-events of an event do not depend on which other events are converted or in which order.

Command line::

    python -m data_processing.trackml_data <input dir> --particles 10-50 --sub-events 10 \
        --out data/tml_10-50.parquet [--keep-noise] [--pixel-only] [--min-hits 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import time
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_processing.common import atomic_write, parse_count_range, read_csv

INPUT_COLUMNS = ("x", "y", "z")
TARGET_COLUMNS = ("theta", "sin_phi", "cos_phi", "q")

#: Pixel detector volumes of the TrackML detector.
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
# Kaggle and Codalab files share these; Codalab particles also have particle_type.
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

# Upper bound on random keys drawn at once when choosing subsets (8 bytes each, ~32 MiB):
# large K x n draws are split into blocks of sub-events so memory stays bounded.
_MAX_KEYS_PER_BLOCK = 1 << 22
# Rows buffered before a parquet row group is written: big enough for fast column reads,
# small enough that converting many full events never holds the whole data set in memory.
_ROW_GROUP_ROWS = 1 << 20
_CONFIG_METADATA_KEY = b"trackml_sub_event_config"


# --------------------------------------------------------------------------------------
# Reading events
# --------------------------------------------------------------------------------------


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


def _split_prefix(path_or_prefix: str | os.PathLike[str]) -> Path:
    """Turn ``dir/event000000001`` or ``dir/event000000001-hits.csv.gz`` into the prefix."""
    path = Path(path_or_prefix)
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; pass an event prefix such as {path}/event000000001 "
            "(list_events() finds them)"
        )
    match = _EVENT_FILE_RE.match(path.name)
    return path.with_name(match["prefix"]) if match else path


def _event_number(prefix: Path) -> int:
    """TrackML event number from the trailing digits of a prefix (``event000000001`` -> 1)."""
    match = re.search(r"(\d+)$", prefix.name)
    if match is None:
        raise ValueError(
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


def _check_frame(frame: pd.DataFrame, kind: str, label: str) -> pd.DataFrame:
    """Validate one TrackML table and return it with normalised dtypes.

    Inputs: ``frame`` as read from the ``kind`` file ("hits", "truth" or "particles");
    ``label`` names the file in error messages. Output: the required (and known optional)
    columns only, integers as int64 and floats as float64. Raises ValueError naming the
    file and column for a missing column, a non-numeric column, a fractional value in an
    integer column, a NaN, a duplicated id or an empty table.
    """
    if frame.empty:
        raise ValueError(f"{label}: the {kind} table is empty")
    spec = _FILE_COLUMNS[kind]
    missing = [name for name, _ in spec if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{label}: missing column(s) {', '.join(missing)} in the {kind} table "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    optional = [(n, k) for n, k in _OPTIONAL_FILE_COLUMNS[kind] if n in frame.columns]
    out = {}
    for name, kind_code in (*spec, *optional):
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ValueError(f"{label}: column {name} is not numeric (dtype {col.dtype})")
        values = col.to_numpy()
        n_nan = int(pd.isna(col).sum())
        if n_nan:
            raise ValueError(f"{label}: column {name} has {n_nan} NaN value(s)")
        if kind_code == "i":
            # A float column here means text like "1.5" or a lost integer: not the format.
            if not pd.api.types.is_integer_dtype(col):
                raise ValueError(
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
        raise ValueError(
            f"{label}: {int(duplicated.sum())} duplicated {id_column} value(s), e.g. {example}"
        )
    return result


def _read_csv(path: Path, kind: str) -> pd.DataFrame:
    """Read and validate one TrackML CSV file (see ``_check_frame`` for the output)."""
    return _check_frame(read_csv(path, f"{kind} CSV file"), kind, str(path))


def _check_consistency(
    hits: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame, labels: Sequence[str]
) -> None:
    """Cross-file checks: hits and truth describe the same hit_ids; every particle that
    left a hit is in the particles table, with charge +-1 and non-zero momentum.

    ``labels`` names the hits, truth and particles files in messages. Raises ValueError.
    """
    hits_label, truth_label, particles_label = labels
    in_truth = hits["hit_id"].isin(truth["hit_id"])
    if not in_truth.all():
        example = int(hits.loc[~in_truth, "hit_id"].iloc[0])
        raise ValueError(
            f"{hits_label}: {int((~in_truth).sum())} hit(s) without truth rows in "
            f"{truth_label}, e.g. hit_id {example}"
        )
    if len(truth) != len(hits):
        extra = truth.loc[~truth["hit_id"].isin(hits["hit_id"]), "hit_id"]
        raise ValueError(
            f"{truth_label}: {len(extra)} truth row(s) for hit_ids absent from {hits_label}, "
            f"e.g. hit_id {int(extra.iloc[0])}"
        )
    hit_particles = pd.unique(truth.loc[truth["particle_id"] != 0, "particle_id"])
    known = pd.Index(particles["particle_id"]).get_indexer(hit_particles)
    if (known < 0).any():
        raise ValueError(
            f"{truth_label}: {int((known < 0).sum())} particle_id(s) with hits are absent "
            f"from {particles_label}, e.g. {int(hit_particles[known < 0][0])}"
        )
    charge = particles["q"].to_numpy()[known]
    if not np.isin(charge, (-1, 1)).all():
        bad = hit_particles[~np.isin(charge, (-1, 1))]
        raise ValueError(
            f"{particles_label}: {len(bad)} particle(s) with hits have charge q not in "
            f"{{-1, +1}}, e.g. particle_id {int(bad[0])}"
        )
    momentum = particles[["px", "py", "pz"]].to_numpy()[known]
    zero = ~(np.abs(momentum) > 0).any(axis=1)
    if zero.any():
        raise ValueError(
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

    Raises FileNotFoundError for a missing file and ValueError (naming the file and
    column) for a missing or non-numeric column, NaN values, duplicated ids, hits without
    truth rows (or the reverse), or particles with hits that are absent from the particles
    table.
    """
    prefix = _split_prefix(path_or_prefix)
    number = _event_number(prefix) if event_id is None else int(event_id)
    paths = {kind: _find_event_file(prefix, kind) for kind in ("hits", "truth", "particles")}
    frames = {kind: _read_csv(path, kind) for kind, path in paths.items()}
    _check_consistency(
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


# --------------------------------------------------------------------------------------
# Sub-events
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubEventConfig:
    """How sub-events are drawn from a full event.

    Attributes:
        particles: (min, max) particles per sub-event; N is drawn uniformly from the
            integers min..max (inclusive) for each sub-event.
        sub_events_per_event: K, the number of sub-events drawn from each full event.
        keep_noise: keep a proportional share of the event's noise hits: round(n_noise * N
            / n_eligible) of them, drawn at random, where n_eligible is the number of
            particles that could be chosen (so taking all of them keeps all noise).
        pixel_only: keep hits in the pixel volumes 7, 8, 9 only; applied to the hits (and
            noise) before particles are chosen.
        min_hits: a particle is eligible if it has at least this many hits (after the pixel
            filter).
        seed: root seed; each event gets its own stream from
            ``SeedSequence(seed, spawn_key=(event_id,))``.
    """

    particles: tuple[int, int] = (10, 50)
    sub_events_per_event: int = 10
    keep_noise: bool = False
    pixel_only: bool = False
    min_hits: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        def is_int(value: object) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        if len(self.particles) != 2 or not all(is_int(v) for v in self.particles):
            raise ValueError(f"particles must be a (min, max) pair of ints, got {self.particles}")
        low, high = self.particles
        if not 1 <= low <= high:
            raise ValueError(f"particles must satisfy 1 <= min <= max, got {self.particles}")
        for name in ("sub_events_per_event", "min_hits"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        # Normalise numpy ints so the config prints and serialises cleanly.
        object.__setattr__(self, "particles", (int(low), int(high)))


def _event_rng(seed: int, event_id: int) -> np.random.Generator:
    """Random stream of one event, independent of which other events are processed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(event_id,)))


def _draw_subsets(
    rng: np.random.Generator, n_items: int, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one uniform random subset (without replacement) of range(n_items) per size.

    Inputs: ``sizes`` (int64 [K], each <= n_items). Output: (group [S], item [S]) int64
    arrays, S = sizes.sum(): ``item[group == k]`` is subset k (in no particular order).
    The subsets are independent: each row gets its own i.i.d. uniform keys and the subset is
    the indices of its ``sizes[k]`` smallest keys (a uniform random subset), found with a
    vectorised argpartition over all rows of a block at once.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups: list[np.ndarray] = []
    items: list[np.ndarray] = []
    if n_items > 0 and sizes.size:
        block = max(1, _MAX_KEYS_PER_BLOCK // n_items)
        for start in range(0, sizes.size, block):
            block_sizes = sizes[start : start + block]
            widest = int(block_sizes.max())
            if widest == 0:
                continue
            keys = rng.random((block_sizes.size, n_items))
            smallest = np.argpartition(keys, widest - 1, axis=1)[:, :widest]
            # Row k keeps its first block_sizes[k] of the `widest` smallest keys, which are
            # its block_sizes[k] smallest only after ordering them: sort the kept keys.
            order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
            smallest = np.take_along_axis(smallest, order, axis=1)
            take = np.arange(widest)[None, :] < block_sizes[:, None]
            items.append(smallest[take])
            groups.append(np.repeat(np.arange(start, start + block_sizes.size), block_sizes))
    if not items:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(groups).astype(np.int64), np.concatenate(items).astype(np.int64)


def _particle_targets(particles: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-particle targets from the raw initial momentum (float64 arrays, one per column).

    Output columns: theta = arccos(pz/p) in [0, pi], sin_phi, cos_phi with phi =
    atan2(py, px), q (+-1), pt = hypot(px, py) (GeV), eta = -ln tan(theta/2) =
    arcsinh(pz/pt). A NaN row is appended at the end so that index -1 (noise, particle not
    found) gathers NaN.
    """
    px, py, pz = (particles[c].to_numpy(np.float64) for c in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    p = np.hypot(pt, pz)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.arccos(np.clip(pz / p, -1.0, 1.0))
        # arcsinh(pz/pt) equals -ln tan(theta/2) but stays accurate at large |eta|.
        eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    columns = {
        "theta": theta,
        "sin_phi": np.sin(phi),
        "cos_phi": np.cos(phi),
        "q": particles["q"].to_numpy(np.float64),
        "pt": pt,
        "eta": eta,
    }
    return {name: np.append(values, np.nan) for name, values in columns.items()}


def _build(
    event: TrackMLEvent, config: SubEventConfig, first_event_id: int
) -> tuple[pd.DataFrame, int]:
    """``build_sub_events`` plus the number of sub-events whose N was capped."""
    labels = [f"{event.name} ({kind})" for kind in ("hits", "truth", "particles")]
    hits = _check_frame(event.hits, "hits", labels[0])
    truth = _check_frame(event.truth, "truth", labels[1])
    particles = _check_frame(event.particles, "particles", labels[2])
    _check_consistency(hits, truth, particles, labels)

    # Align truth to the hits' row order (validated 1:1 above) without reordering hits.
    truth_row = pd.Index(truth["hit_id"]).get_indexer(hits["hit_id"])
    particle_of_hit = truth["particle_id"].to_numpy()[truth_row]
    if config.pixel_only:
        rows = np.flatnonzero(hits["volume_id"].isin(PIXEL_VOLUMES).to_numpy())
    else:
        rows = np.arange(len(hits))
    pid = particle_of_hit[rows]
    noise_rows = rows[pid == 0]
    signal_rows = rows[pid != 0]

    # Group the (filtered) signal hits by particle, CSR style: particle j owns
    # rows_by_particle[offsets[j]:offsets[j+1]]; the stable sort keeps file order inside.
    _, inverse, counts = np.unique(pid[pid != 0], return_inverse=True, return_counts=True)
    rows_by_particle = signal_rows[np.argsort(inverse, kind="stable")]
    offsets = np.concatenate(([0], np.cumsum(counts)))
    eligible = np.flatnonzero(counts >= config.min_hits)
    n_eligible = eligible.size
    if n_eligible == 0:
        raise ValueError(
            f"{event.name}: no eligible particles (need >= {config.min_hits} hit(s)"
            f"{' in the pixel volumes' if config.pixel_only else ''})"
        )

    rng = _event_rng(config.seed, event.event_id)
    k_sub = config.sub_events_per_event
    low, high = config.particles
    requested = rng.integers(low, high + 1, size=k_sub, dtype=np.int64)
    sizes = np.minimum(requested, n_eligible)
    n_capped = int((requested > n_eligible).sum())
    if n_capped:
        warnings.warn(
            f"{event.name}: {n_capped} of {k_sub} sub-event(s) asked for more particles than "
            f"the {n_eligible} eligible; capped to {n_eligible}",
            UserWarning,
            stacklevel=3,
        )

    sub_of_particle, pick = _draw_subsets(rng, n_eligible, sizes)
    chosen = eligible[pick]
    hit_counts = counts[chosen]
    # Expand each chosen particle into all of its hit rows without a Python loop:
    # position = particle start + running index within that particle's run.
    starts = np.repeat(offsets[chosen] - (np.cumsum(hit_counts) - hit_counts), hit_counts)
    hit_rows = rows_by_particle[starts + np.arange(hit_counts.sum())]
    hit_sub = np.repeat(sub_of_particle, hit_counts)

    if config.keep_noise and noise_rows.size:
        noise_sizes = np.rint(noise_rows.size * sizes / n_eligible).astype(np.int64)
        noise_sub, noise_pick = _draw_subsets(rng, noise_rows.size, noise_sizes)
        hit_rows = np.concatenate((hit_rows, noise_rows[noise_pick]))
        hit_sub = np.concatenate((hit_sub, noise_sub))

    order = np.lexsort((hit_rows, hit_sub))  # by sub-event, then original file row
    hit_rows, hit_sub = hit_rows[order], hit_sub[order]

    out_pid = particle_of_hit[hit_rows]
    particle_row = pd.Index(particles["particle_id"]).get_indexer(out_pid)
    particle_row[out_pid == 0] = -1  # noise gathers the appended NaN row
    targets = _particle_targets(particles)
    columns: dict[str, np.ndarray] = {
        "event_id": first_event_id + hit_sub,
        "hit_id": hits["hit_id"].to_numpy()[hit_rows],
        "particle_id": out_pid,
        "weight": truth["weight"].to_numpy()[truth_row[hit_rows]],
        **{c: hits[c].to_numpy()[hit_rows] for c in INPUT_COLUMNS},
        **{c: targets[c][particle_row] for c in TARGET_COLUMNS},
        "source_event": np.full(hit_rows.size, event.event_id),
        **{c: hits[c].to_numpy()[hit_rows] for c in ("volume_id", "layer_id", "module_id")},
        "pt": targets["pt"][particle_row],
        "eta": targets["eta"][particle_row],
    }
    table = pd.DataFrame(
        {name: np.asarray(columns[name]).astype(HIT_TABLE_DTYPES[name]) for name in columns}
    )
    return table, n_capped


def build_sub_events(
    event: TrackMLEvent, config: SubEventConfig, first_event_id: int = 0
) -> pd.DataFrame:
    """Draw ``config.sub_events_per_event`` sub-events from one full event.

    Inputs: a ``TrackMLEvent``; a ``SubEventConfig``; ``first_event_id``, the event_id of
    the first sub-event (sub-event k gets ``first_event_id + k``).

    Each sub-event draws N ~ uniform{min..max} and an independent uniform random set of N
    eligible particles (at least ``min_hits`` hits after the optional pixel filter); all
    hits of the chosen particles are kept with their original hit_id and weight, plus, with
    ``keep_noise``, round(n_noise * N / n_eligible) noise hits drawn at random. If N exceeds
    the number of eligible particles it is capped to it and a ``UserWarning`` naming the
    event counts the capped sub-events.

    Output: the hit table described in the module docstring (``HIT_TABLE_COLUMNS`` with
    ``HIT_TABLE_DTYPES``), rows grouped by event_id, file order within a sub-event.
    Raises ValueError for an inconsistent event or one without eligible particles.
    """
    return _build(event, config, first_event_id)[0]


# --------------------------------------------------------------------------------------
# Writing and reading hit tables
# --------------------------------------------------------------------------------------


def _table_format(path: Path) -> str:
    """Storage format ("parquet" or "csv") from the file name; ValueError otherwise."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv.gz", ".csv")):
        return "csv"
    raise ValueError(f"{path}: unsupported hit table format (use .parquet, .csv.gz or .csv)")


def _arrow_schema(config: SubEventConfig | None, extra: pd.DataFrame | None = None) -> pa.Schema:
    """Arrow schema of the hit table: the contract columns (``HIT_TABLE_DTYPES``), then
    the columns of ``extra`` with the types pyarrow gives them; the sub-event config is
    kept as file metadata."""
    fields = [
        pa.field(name, pa.from_numpy_dtype(np.dtype(dtype)))
        for name, dtype in HIT_TABLE_DTYPES.items()
    ]
    if extra is not None:
        fields += list(pa.Schema.from_pandas(extra, preserve_index=False))
    schema = pa.schema(fields)
    if config is not None:
        schema = schema.with_metadata({_CONFIG_METADATA_KEY: json.dumps(asdict(config))})
    return schema


class _HitTableWriter:
    """Streams hit tables to ``<out>`` through ``common.atomic_write`` (a temporary file
    in the same directory, renamed into place only on success), so readers never see a
    half-written data set. Use as a context manager.

    Every table written must have exactly the writer's columns: ``HIT_TABLE_COLUMNS``
    followed by ``extra_columns`` (in any order; they are written in that one).
    """

    def __init__(
        self,
        out_path: Path,
        config: SubEventConfig | None = None,
        extra_columns: pd.DataFrame | None = None,
    ) -> None:
        """``extra_columns``: a frame (any rows, e.g. none) whose columns and dtypes are
        the extra columns to write after the contract ones; None = none."""
        self.out_path = out_path
        self.format = _table_format(out_path)
        self.schema = _arrow_schema(config, extra_columns)
        self.columns = tuple(self.schema.names)
        self._buffer: list[pd.DataFrame] = []
        self._buffered_rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: Any = None
        self._wrote_header = False
        self._files = contextlib.ExitStack()  # the open file, set up by __enter__

    def __enter__(self) -> _HitTableWriter:
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
            raise ValueError(f"{self.out_path}: hit table to write {' and '.join(problems)}")
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

    ``table`` must have ``HIT_TABLE_COLUMNS`` (else ValueError naming the file and the
    missing columns); they are written first, in that order, then every other column of
    ``table`` (``read_hit_table`` keeps such extras, so nothing is dropped).
    """
    # The extras' types come from their values (an empty frame would type an object
    # column of strings as null).
    extra = table[[c for c in table.columns if c not in HIT_TABLE_DTYPES]]
    with _HitTableWriter(Path(out_path), extra_columns=extra) as writer:
        writer.write(table)


def _resolve_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """Event prefixes from a directory, one prefix/file, or a list of them (order kept)."""
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            prefixes = list_events(path)
            if not prefixes:
                raise ValueError(f"{path}: no eventNNNNNNNNN-hits.csv[.gz] files found")
            return prefixes
        return [_split_prefix(path)]
    prefixes = list(dict.fromkeys(_split_prefix(p) for p in inputs))  # dedupe, keep order
    if not prefixes:
        raise ValueError("no input events given")
    return prefixes


def convert_events(
    input_dir_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    config: SubEventConfig,
    progress: bool = False,
) -> dict[str, Any]:
    """Convert TrackML events into one sub-event hit table file.

    Inputs: a directory (all ``event*`` events in it, sorted by number), an event prefix or
    file, or a list of prefixes/files (converted in the given order); ``out_path`` ending
    in ``.parquet`` (recommended), ``.csv.gz`` or ``.csv``; the ``SubEventConfig``;
    ``progress`` shows a tqdm bar over events.

    Event i (0-based, in input order) gets sub-event ids ``i*K .. i*K + K-1``, so ids are
    unique in the file. The output is parquet by default because it is columnar (the
    loader reads only the columns it needs), typed (int64 ids and float32 values come back
    exactly, no float-to-text round trip), compressed (zstd) and fast to read in part (row
    groups, column projection); csv.gz is offered for tools without parquet support. The
    file is written to a temporary name and moved into place atomically; the config is
    stored in the parquet metadata.

    Output: a summary dict: events, sub_events, hits, particles (chosen particles summed
    over sub-events), noise_hits, noise_share, capped_sub_events, input_hits, seconds,
    hits_per_second (output hits per second of wall time, reading included), out_path.
    """
    out = Path(out_path)
    _table_format(out)  # fail on a bad suffix before doing any work
    prefixes = _resolve_inputs(input_dir_or_files)
    k_sub = config.sub_events_per_event
    totals = dict.fromkeys(
        ("sub_events", "hits", "particles", "noise_hits", "capped_sub_events", "input_hits"), 0
    )
    start = time.perf_counter()
    with _HitTableWriter(out, config) as writer:
        for index, prefix in tqdm(
            enumerate(prefixes),
            total=len(prefixes),
            desc="events",
            unit="event",
            disable=not progress,
        ):
            event = read_event(prefix)
            table, n_capped = _build(event, config, first_event_id=index * k_sub)
            writer.write(table)
            signal = table["particle_id"].to_numpy() != 0
            totals["sub_events"] += k_sub
            totals["hits"] += len(table)
            totals["noise_hits"] += int((~signal).sum())
            totals["particles"] += int(
                table.loc[signal, ["event_id", "particle_id"]].drop_duplicates().shape[0]
            )
            totals["capped_sub_events"] += n_capped
            totals["input_hits"] += len(event.hits)
    seconds = time.perf_counter() - start
    return {
        "events": len(prefixes),
        **totals,
        "noise_share": totals["noise_hits"] / totals["hits"] if totals["hits"] else 0.0,
        "seconds": seconds,
        "hits_per_second": totals["hits"] / seconds if seconds > 0 else float("inf"),
        "out_path": str(out),
    }


def read_hit_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a converted data set (.parquet, .csv.gz or .csv) and validate the contract.

    Output: the hit table with ``REQUIRED_HIT_TABLE_COLUMNS`` (and any of the optional
    extras present) cast to ``HIT_TABLE_DTYPES``, extra unknown columns kept as they are,
    sorted by event_id with the file's row order kept within an event (stable sort), index
    0..n-1.

    Raises FileNotFoundError for a missing file and ValueError naming the file (and column)
    for: unsupported suffix, unreadable file, empty table, missing or non-numeric column,
    NaN in an id/integer column, x/y/z or weight, NaN targets on hits with particle_id != 0,
    a charge q not in {-1, +1}, or a hit_id repeated within a sub-event.
    """
    file = Path(path)
    fmt = _table_format(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: hit table not found")
    if fmt == "csv":
        frame = read_csv(file, "csv hit table")
    else:
        try:
            frame = pd.read_parquet(file, engine="pyarrow")
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{file}: not a readable parquet hit table ({e})") from e
    if frame.empty:
        raise ValueError(f"{file}: the hit table is empty")
    missing = [c for c in REQUIRED_HIT_TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{file}: missing hit table column(s) {', '.join(missing)} "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    for name, dtype in HIT_TABLE_DTYPES.items():
        if name not in frame.columns:
            continue
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ValueError(f"{file}: column {name} is not numeric (dtype {col.dtype})")
        if np.dtype(dtype).kind == "i":
            if col.isna().any():
                raise ValueError(f"{file}: column {name} has {int(col.isna().sum())} NaN value(s)")
            if not pd.api.types.is_integer_dtype(col):
                raise ValueError(f"{file}: column {name} must hold integers (dtype {col.dtype})")
        frame[name] = col.astype(dtype)
    for name in (*INPUT_COLUMNS, "weight"):
        n_nan = int(frame[name].isna().sum())
        if n_nan:
            raise ValueError(f"{file}: column {name} has {n_nan} NaN value(s)")
    is_particle = frame["particle_id"].to_numpy() != 0
    for name in TARGET_COLUMNS:
        bad = is_particle & frame[name].isna().to_numpy()
        if bad.any():
            raise ValueError(
                f"{file}: column {name} is NaN on {int(bad.sum())} hit(s) of particles "
                f"(particle_id != 0), e.g. event_id {int(frame['event_id'].to_numpy()[bad][0])}"
            )
    if not np.isin(frame["q"].to_numpy()[is_particle], (-1.0, 1.0)).all():
        raise ValueError(f"{file}: column q holds values other than -1/+1 for particle hits")
    duplicated = frame.duplicated(["event_id", "hit_id"])
    if duplicated.any():
        raise ValueError(
            f"{file}: {int(duplicated.sum())} hit_id(s) repeated within a sub-event, e.g. "
            f"event_id {int(frame.loc[duplicated, 'event_id'].iloc[0])}"
        )
    return frame.sort_values("event_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parse_range(text: str) -> tuple[int, int]:
    """``"10-50"`` -> (10, 50); ``"20"`` -> (20, 20) (``common.parse_count_range``)."""
    try:
        return parse_count_range(text, "particles per sub-event")
    except ValueError as e:
        # argparse shows the text of an ArgumentTypeError, but not of a ValueError.
        raise argparse.ArgumentTypeError(str(e)) from e


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_processing.trackml_data",
        description="Draw sub-events from TrackML events and write one hit table file.",
    )
    parser.add_argument("input", help="directory of eventNNNNNNNNN-* files, or one prefix/file")
    parser.add_argument(
        "--particles", type=_parse_range, default=(10, 50), help="MIN-MAX particles"
    )
    parser.add_argument("--sub-events", type=int, default=10, help="sub-events per event")
    parser.add_argument("--out", required=True, help="output .parquet, .csv.gz or .csv")
    parser.add_argument("--keep-noise", action="store_true", help="keep a share of noise")
    parser.add_argument("--pixel-only", action="store_true", help="pixel volumes 7/8/9 only")
    parser.add_argument("--min-hits", type=int, default=1, help="min hits per particle")
    parser.add_argument("--seed", type=int, default=0, help="root random seed")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: parse ``argv``, print the config, convert, print a summary."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = SubEventConfig(
            particles=args.particles,
            sub_events_per_event=args.sub_events,
            keep_noise=args.keep_noise,
            pixel_only=args.pixel_only,
            min_hits=args.min_hits,
            seed=args.seed,
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"input: {args.input}")
    print(f"output: {args.out}")
    print(f"config: {config}")
    summary = convert_events(args.input, args.out, config, progress=True)
    print(
        f"events: {summary['events']}  sub-events: {summary['sub_events']}  "
        f"hits: {summary['hits']}  particles: {summary['particles']}  "
        f"noise share: {summary['noise_share']:.3f}  "
        f"capped sub-events: {summary['capped_sub_events']}"
    )
    print(
        f"wrote {summary['out_path']} in {summary['seconds']:.2f} s "
        f"({summary['hits_per_second']:,.0f} hits/s)"
    )


if __name__ == "__main__":
    main()
