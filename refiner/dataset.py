"""Refiner data set: every (event, particle) hit group becomes an event of its own.

The refiner is a second TransformerRegressor that sees ONE cluster of hits at a time and
regresses each hit's track parameters, so that an impure cluster can be split. It is
trained on single-particle groups written as an ordinary data file of the source's own
type, so the one training loop (``training_loop.train``) reads it unchanged:

* REDVID (``linear``/``helical``): a ``;``-separated CSV with the source file's columns
  (the REDVID layout, whichever variant the source used), ``event_id`` renumbered to the
  group id, plus extra columns ``source_event_id`` (the group's event_id in the source
  file) and ``source_event`` (its original event; for REDVID the same), which the loader
  ignores.
* ``trackml``: a hit table written by ``hit_table.write_hit_table``, ``event_id`` =
  group id, ``source_event_id`` = the group's event_id in the source file and
  ``source_event`` = the TrackML event it came from. Optional contract columns the
  source lacks are filled with -1 (integers) or NaN (floats).

The particle id (``track_id`` / ``particle_id``) and every per-hit target stay as they
were, so a group is traceable to its source (source_event, particle id). Noise hits
(as the data type identifies them, ``DataType.rows_particle_ids``) belong to no group.

Impure groups ("merging", ``GroupConfig.merge_fraction``): a chosen share of the groups
also receives a random part (1 to all hits, uniformly) of another particle of the same
event, keeping that particle's own id and targets. HDBSCAN's impure clusters are mostly
such merges, so a refiner trained with them learns to regress two tracks in one input.

The row-level helpers (``write_derived_rows``, ``EventSelection``) live in
``data_processing.derived_data`` and the row reader (``read_rows``) in
``data_processing.dataset``, shared with the domain decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.data_types import data_type_named
from data_processing.dataset import read_rows
from data_processing.derived_data import (
    EventSelection,
    with_source_columns,
    write_derived_rows,
)
from data_processing.errors import UserError


@dataclass(frozen=True)
class GroupConfig:
    """How hit groups are formed.

    min_hits: particles with fewer hits form no group (counted in the summary).
    merge_fraction: share of groups (0..1) that also get hits of another particle of the
        same event (see module docstring).
    seed: seed of every random draw (hit order within a group, merge partners, sizes).
    """

    min_hits: int = 3
    # Measured on helical 10-50 (README): a refiner trained on pure groups only lifts the
    # score 0.723 -> 0.737; with half of the groups merged it lifts it to 0.831 (both
    # with forced splits, --no-refine_single_cluster).
    merge_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_hits < 1:
            raise UserError(f"min_hits must be >= 1, got {self.min_hits}")
        if not 0.0 <= self.merge_fraction <= 1.0:
            raise UserError(f"merge_fraction must lie in [0, 1], got {self.merge_fraction}")


@dataclass(frozen=True)
class GroupSummary:
    """What ``build_group_file`` wrote."""

    path: Path
    n_source_events: int
    n_groups: int
    n_hits: int
    n_dropped_particles: int  # particles with fewer than min_hits hits
    n_merged_groups: int  # groups holding hits of a second particle
    n_foreign_hits: int  # hits added by merging


def particle_groups(
    rows: pd.DataFrame, particle: np.ndarray, config: GroupConfig
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Regroup source rows into single-particle hit groups (vectorised, seeded).

    Args:
        rows: source rows with ``event_id``.
        particle: [N] int64 particle id of every row (0 = noise), as the data type reads
            it (``DataType.rows_particle_ids``).
        config: group settings.

    Returns:
        (groups, counts). ``groups`` holds one row per (group, hit): the source row's
        columns with ``event_id`` = group id (0..G-1, groups ordered by source event and
        particle id), ``source_event`` = the source event_id; a group's own hits come
        first, in random order, then its merged foreign hits. ``counts`` has
        ``n_dropped_particles``, ``n_merged_groups`` and ``n_foreign_hits``.
    """
    rng = np.random.default_rng(config.seed)
    event = rows["event_id"].to_numpy(np.int64)
    particle = np.asarray(particle, dtype=np.int64)
    track_rows = np.flatnonzero(particle != 0)
    # Rows sorted by (event, particle) with a random order inside each particle.
    order = np.lexsort((rng.random(len(track_rows)), particle[track_rows], event[track_rows]))
    sorted_rows = track_rows[order]
    key_event, key_particle = event[sorted_rows], particle[sorted_rows]
    new_group = np.ones(len(sorted_rows), dtype=bool)
    new_group[1:] = (np.diff(key_event) != 0) | (np.diff(key_particle) != 0)
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(sorted_rows)))
    kept = sizes >= config.min_hits
    n_dropped = int((~kept).sum())
    starts, sizes = starts[kept], sizes[kept]
    n_groups = len(starts)
    group_event = key_event[starts]

    # Merge partners: another group of the same event, drawn uniformly.
    first_of_event = np.flatnonzero(np.append(True, np.diff(group_event) != 0))
    groups_in_event = np.diff(np.append(first_of_event, n_groups))
    event_slot = np.repeat(np.arange(len(first_of_event)), groups_in_event)
    local = np.arange(n_groups) - first_of_event[event_slot]
    n_in_event = groups_in_event[event_slot]
    merged = (rng.random(n_groups) < config.merge_fraction) & (n_in_event > 1)
    step = 1 + np.floor(rng.random(n_groups) * (n_in_event - 1)).astype(np.int64)
    partner = first_of_event[event_slot] + (local + step) % np.maximum(n_in_event, 1)
    n_foreign = np.where(
        merged, 1 + np.floor(rng.random(n_groups) * sizes[partner]).astype(np.int64), 0
    )

    # Gather own rows, then foreign rows (a prefix of the partner's shuffled rows).
    own_group = np.repeat(np.arange(n_groups), sizes)
    own = sorted_rows[np.repeat(starts, sizes) + _ranks(sizes)]
    foreign_group = np.repeat(np.arange(n_groups), n_foreign)
    foreign = sorted_rows[np.repeat(starts[partner], n_foreign) + _ranks(n_foreign)]
    group_of_row = np.concatenate([own_group, foreign_group])
    source_rows = np.concatenate([own, foreign])
    layout = np.argsort(group_of_row, kind="stable")
    groups = with_source_columns(rows.iloc[source_rows[layout]].reset_index(drop=True))
    groups["event_id"] = group_of_row[layout]
    counts = {
        "n_dropped_particles": n_dropped,
        "n_merged_groups": int(merged.sum()),
        "n_foreign_hits": int(n_foreign.sum()),
    }
    return groups, counts


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0..size-1 for every block of the given sizes, concatenated: [sum(sizes)]."""
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def default_group_path(source_path: str | Path, data_type: str, tag: str) -> Path:
    """Where a group file derived from ``source_path`` goes: next to it, named by ``tag``."""
    source_path = Path(source_path)
    suffix = data_type_named(data_type).derived_suffix
    stem = source_path.name.split(".")[0]
    return source_path.parent / f"{stem}_refiner_groups_{tag}{suffix}"


def build_group_file(
    source_path: str | Path,
    data_type: str,
    out_path: str | Path,
    config: GroupConfig,
    selection: EventSelection | None = None,
) -> GroupSummary:
    """Read a data file, form the hit groups of the chosen events and write them.

    Args:
        source_path: REDVID CSV or converted TrackML hit table.
        data_type: "linear", "helical" or "trackml".
        out_path: the group file (.csv for REDVID; .parquet/.csv[.gz] for trackml).
        config: group settings.
        selection: which source events (positions in increasing event_id order, as in
            ``EventSet`` and ``split_events``); None = all.

    Returns:
        A ``GroupSummary``. Raises ValueError when no group is left.
    """
    rows = read_rows(source_path, data_type)
    # Noise is what the file says it is (for REDVID: the row, not only its track_id).
    particle = data_type_named(data_type).rows_particle_ids(rows, str(source_path))
    event_ids = np.unique(rows["event_id"].to_numpy(np.int64))
    if selection is not None:
        chosen = event_ids[selection.positions(len(event_ids))]
        keep = np.isin(rows["event_id"].to_numpy(np.int64), chosen)
        rows, particle = rows[keep], particle[keep]
        event_ids = chosen
    groups, counts = particle_groups(rows, particle, config)
    if groups.empty:
        raise UserError(
            f"{source_path}: no particle with >= {config.min_hits} hits in the chosen events"
        )
    path = write_derived_rows(groups, data_type, out_path)
    return GroupSummary(
        path=path,
        n_source_events=len(event_ids),
        n_groups=int(groups["event_id"].iloc[-1]) + 1,
        n_hits=len(groups),
        **counts,
    )
