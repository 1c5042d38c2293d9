"""TrackML sub-event builder and converter (SPEC sections 3.2 and 3.3).

Draws "sub-events" of N particles from each full TrackML event (read by
``trackml_events.read_event``; the paper's TML:10-50, 50-100, 200-500 data sets) and
writes one *hit table* per data set (the contract, writer and reader are in
``hit_table``). Within a sub-event the rows keep the order of the original hits file;
``event_id`` is the sub-event id, ``source_event`` the TrackML event number.

Sub-events are drawn independently (each one is a fresh uniform random particle set, not a
nested prefix of one particle list as in the reference code), every hit of a chosen
particle is kept, and a proportional share of noise hits can be kept. Random streams are
derived per event from ``np.random.SeedSequence(seed, spawn_key=(event_id,))``, so the
sub-events of an event do not depend on which other events are converted or in which order.

Command line::

    python -m data_processing.trackml_data <input dir> --particles 10-50 --sub_events 10 \
        --out data/tml_10-50.parquet [--keep_noise] [--pixel_only] [--min_hits 1] [--seed 0]

(the hyphenated spellings ``--sub-events``, ``--keep-noise``, ... are accepted too).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_processing.common import concatenated_ranges, parse_count_range
from data_processing.errors import DefaultsHelpFormatter, UserError, run_cli
from data_processing.hit_table import (
    HIT_TABLE_DTYPES,
    INPUT_COLUMNS,
    PIXEL_VOLUMES,
    TARGET_COLUMNS,
    HitTableWriter,
    table_format,
)
from data_processing.trackml_events import (
    TrackMLEvent,
    event_prefix,
    list_events,
    read_event,
    validate_event_consistency,
    validate_event_table,
)

# Upper bound on random keys drawn at once when choosing subsets (8 bytes each, ~32 MiB):
# large K x n draws are split into blocks of sub-events so memory stays bounded.
_MAX_KEYS_PER_BLOCK = 1 << 22
_CONFIG_METADATA_KEY = b"trackml_sub_event_config"


# --------------------------------------------------------------------------------------
# Sub-events
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubEventConfig:
    """How sub-events are drawn from a full event.

    Attributes:
        particles: (min, max) particles per sub-event; N is drawn uniformly from the
            integers min..max (inclusive) for each sub-event.
        all_particles: take every eligible particle (a full event without its noise, or
            with all of it under ``keep_noise``); ``particles`` is then ignored and nothing
            is capped.
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
    all_particles: bool = False
    keep_noise: bool = False
    pixel_only: bool = False
    min_hits: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        def is_int(value: object) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        if len(self.particles) != 2 or not all(is_int(v) for v in self.particles):
            raise UserError(f"particles must be a (min, max) pair of ints, got {self.particles}")
        low, high = self.particles
        if not 1 <= low <= high:
            raise UserError(f"particles must satisfy 1 <= min <= max, got {self.particles}")
        for name in ("sub_events_per_event", "min_hits"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise UserError(f"{name} must be an int >= 1, got {value!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise UserError(f"seed must be an int >= 0, got {self.seed!r}")
        # Normalise numpy ints so the config prints and serialises cleanly.
        object.__setattr__(self, "particles", (int(low), int(high)))


def _config_metadata(config: SubEventConfig) -> dict[bytes, str]:
    """The parquet file metadata that records how a converted set was drawn."""
    return {_CONFIG_METADATA_KEY: json.dumps(asdict(config))}


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
    hits = validate_event_table(event.hits, "hits", labels[0])
    truth = validate_event_table(event.truth, "truth", labels[1])
    particles = validate_event_table(event.particles, "particles", labels[2])
    validate_event_consistency(hits, truth, particles, labels)

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
        raise UserError(
            f"{event.name}: no eligible particles (need >= {config.min_hits} hit(s)"
            f"{' in the pixel volumes' if config.pixel_only else ''})"
        )

    rng = _event_rng(config.seed, event.event_id)
    k_sub = config.sub_events_per_event
    low, high = config.particles
    # Drawn also for all_particles, so the stream (and the noise draw below) is the same
    # as a request capped at every particle.
    requested = rng.integers(low, high + 1, size=k_sub, dtype=np.int64)
    if config.all_particles:
        requested[:] = n_eligible
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
    # Each chosen particle expanded into all of its hit rows.
    hit_rows = rows_by_particle[concatenated_ranges(offsets[chosen], hit_counts)]
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
    Raises UserError for an inconsistent event or one without eligible particles.
    """
    return _build(event, config, first_event_id)[0]


def _resolve_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """Event prefixes from a directory, one prefix/file, or a list of them (order kept)."""
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            prefixes = list_events(path)
            if not prefixes:
                raise UserError(f"{path}: no eventNNNNNNNNN-hits.csv[.gz] files found")
            return prefixes
        return [event_prefix(path)]
    prefixes = list(dict.fromkeys(event_prefix(p) for p in inputs))  # dedupe, keep order
    if not prefixes:
        raise UserError("no input events given")
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
    table_format(out)  # fail on a bad suffix before doing any work
    prefixes = _resolve_inputs(input_dir_or_files)
    k_sub = config.sub_events_per_event
    totals = dict.fromkeys(
        ("sub_events", "hits", "particles", "noise_hits", "capped_sub_events", "input_hits"), 0
    )
    start = time.perf_counter()
    with HitTableWriter(out, _config_metadata(config)) as writer:
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


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parse_range(text: str) -> tuple[int, int] | None:
    """``"10-50"`` -> (10, 50); ``"20"`` -> (20, 20) (``common.parse_count_range``);
    ``"all"`` -> None (every eligible particle)."""
    if text.strip().lower() == "all":
        return None
    try:
        return parse_count_range(text, "particles per sub-event")
    except ValueError as e:
        # argparse shows the text of an ArgumentTypeError, but not of a ValueError.
        raise argparse.ArgumentTypeError(str(e)) from e


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_processing.trackml_data",
        description="Draw sub-events from TrackML events and write one hit table file.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("input", help="directory of eventNNNNNNNNN-* files, or one prefix/file")
    parser.add_argument(
        "--particles",
        type=_parse_range,
        default=(10, 50),
        help="MIN-MAX particles, or 'all' (every particle: full events without noise)",
    )
    # Underscore spellings like the training flags; the hyphenated ones stay as aliases.
    parser.add_argument(
        "--sub_events", "--sub-events", type=int, default=10, help="sub-events per event"
    )
    parser.add_argument("--out", required=True, help="output .parquet, .csv.gz or .csv")
    parser.add_argument(
        "--keep_noise", "--keep-noise", action="store_true", help="keep a share of noise"
    )
    parser.add_argument(
        "--pixel_only",
        "--pixel-only",
        action="store_true",
        help=f"pixel volumes {'/'.join(map(str, PIXEL_VOLUMES))} only",
    )
    parser.add_argument(
        "--min_hits", "--min-hits", type=int, default=1, help="min hits per particle"
    )
    parser.add_argument("--seed", type=int, default=0, help="root random seed")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: parse ``argv``, print the config, convert, print a summary."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = SubEventConfig(
            particles=args.particles or SubEventConfig.particles,
            all_particles=args.particles is None,
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
    run_cli(main)
