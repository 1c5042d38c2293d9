"""Domain decomposition: split events into overlapping (theta, phi) regions and merge back.

A large event is cut into regions of the hit position's polar angle theta (from the
origin, rad, in [0, pi]) and azimuth phi (rad, in (-pi, pi]); every region of every event
becomes its own small "region event", all of them go through the one inference path in
one batch (``evaluation.decomposition``, which holds the model runs and the command line),
and the per-region track labels are merged back into ONE assignment per original event,
which is then scored like any other. This module is the geometry only: regions, the
split, the merge and region data files; it imports nothing from evaluation.

Regions. ``theta_edges`` (increasing, covering [0, pi]) cut theta into bands;
``phi_edges`` are the starts of the azimuth sectors on the circle: sector i runs from
``phi_edges[i]`` to ``phi_edges[i + 1]`` and the last one from ``phi_edges[-1]`` round to
``phi_edges[0] + 2 pi``, so a sector may straddle phi = +-pi (wrap-around). A region is a
(band, sector) pair, index ``band * n_sectors + sector``. Every region is widened by
``overlap`` rad on each side in theta and in phi; a hit inside such a margin goes to every
region it falls in (it is duplicated), while its *home region* is the one that holds it
without the margins (exactly one per hit).

Merge rule (documented choice):
1. Every hit takes the label it got in its home region.
2. A track found in region A and a track found in region B are the same track when they
   share at least ``min_shared_hits`` hits (copies of the same hit in the overlap); the
   links are followed transitively (connected components), so a particle crossing
   several boundaries is joined across all of them.
Labels that HDBSCAN left unassigned (-1, only with the "unassigned" noise policy) stay -1
and link nothing.

Alternative (``merge="params"``): only the regressor runs per region; every hit takes the
parameters predicted for its home copy and HDBSCAN clusters each whole event once. This
keeps the regressor's cost per region (attention is quadratic in the hits) while
avoiding a limitation of per-region clustering: HDBSCAN never returns a single cluster,
so a region that holds one track only is cut into pieces.

Usage:
    python -m evaluation.decomposition --model_name runs/base.pt \
        --theta_edges 0 1.5708 3.1416 --phi_regions 2 4 8 --overlap 0.1
    # region events of the base model's train + val events, to train a region model:
    python -m evaluation.decomposition --model_name runs/base.pt \
        --phi_regions 4 --overlap 0.1 --write_regions data/regions.csv

A model trained on whole events sees region events out of its training distribution
(fewer tracks, a narrow angular range, fragments of neighbouring tracks in the overlap);
``--write_regions`` writes region events as an ordinary data file for the one training
loop, and ``--model_name`` may then be that region model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_processing.dataset import EventSet, events_from_rows, read_rows
from data_processing.derived_data import (
    EventSelection,
    pair_codes,
    regroup_events,
    with_source_columns,
    write_derived_rows,
)
from data_processing.errors import UserError

TWO_PI = 2.0 * math.pi
MERGE_MODES = ("labels", "params")
# Column of a region file (and extra of a split's EventSet) holding the region index.
REGION_COLUMN = "region"


@dataclass(frozen=True)
class DecompositionConfig:
    """Where the regions are and how region labels are merged (angles in rad).

    theta_edges: increasing band edges of the hit polar angle; the first must be <= 0 and
        the last >= pi so that every hit has a band.
    phi_edges: increasing sector starts on the circle, spanning less than 2 pi; the last
        sector wraps round to ``phi_edges[0] + 2 pi``. One edge = one sector = no phi cut.
    overlap: margin added on each side of every band and sector (>= 0).
    min_shared_hits: tracks of two regions sharing at least this many hits are merged.
    merge: "labels" (cluster per region, merge labels) or "params" (merge the predicted
        parameters, cluster whole events); see the module docstring.
    """

    theta_edges: tuple[float, ...] = (0.0, math.pi)
    phi_edges: tuple[float, ...] = (-math.pi, -math.pi / 2, 0.0, math.pi / 2)
    overlap: float = 0.05
    min_shared_hits: int = 2
    merge: str = "labels"

    def __post_init__(self) -> None:
        theta = np.asarray(self.theta_edges, dtype=np.float64)
        phi = np.asarray(self.phi_edges, dtype=np.float64)
        if len(theta) < 2 or np.any(np.diff(theta) <= 0):
            raise UserError(f"theta_edges must be >= 2 increasing values, got {self.theta_edges}")
        if theta[0] > 0 or theta[-1] < math.pi:
            raise UserError(
                f"theta_edges {self.theta_edges} must cover [0, pi]: first <= 0, last >= pi"
            )
        if len(phi) < 1 or np.any(np.diff(phi) <= 0) or phi[-1] - phi[0] >= TWO_PI:
            raise UserError(
                f"phi_edges must be increasing and span less than 2 pi, got {self.phi_edges}"
            )
        if self.overlap < 0:
            raise UserError(f"overlap must be >= 0, got {self.overlap}")
        if self.min_shared_hits < 1:
            raise UserError(f"min_shared_hits must be >= 1, got {self.min_shared_hits}")
        if self.merge not in MERGE_MODES:
            raise UserError(f"merge must be one of {MERGE_MODES}, got {self.merge!r}")

    @classmethod
    def regular(
        cls,
        theta_edges: tuple[float, ...] = (0.0, math.pi),
        phi_regions: int = 4,
        phi_start: float = -math.pi,
        overlap: float = 0.05,
        min_shared_hits: int = 2,
        merge: str = "labels",
    ) -> DecompositionConfig:
        """``phi_regions`` equal azimuth sectors, the first starting at ``phi_start``."""
        if phi_regions < 1:
            raise UserError(f"phi_regions must be >= 1, got {phi_regions}")
        phi_edges = tuple(
            float(p) for p in phi_start + TWO_PI * np.arange(phi_regions) / phi_regions
        )
        return cls(tuple(theta_edges), phi_edges, overlap, min_shared_hits, merge)

    @property
    def n_bands(self) -> int:
        return len(self.theta_edges) - 1

    @property
    def n_sectors(self) -> int:
        return len(self.phi_edges)

    @property
    def n_regions(self) -> int:
        return self.n_bands * self.n_sectors

    def sector_widths(self) -> np.ndarray:
        """[n_sectors] azimuth width of every sector (rad); they sum to 2 pi."""
        phi = np.asarray(self.phi_edges, dtype=np.float64)
        return np.diff(np.append(phi, phi[0] + TWO_PI))

    def region_centres(self) -> np.ndarray:
        """[n_regions, 2] (theta, phi) centre of every region, phi wrapped to [-pi, pi)."""
        theta = np.asarray(self.theta_edges, dtype=np.float64)
        band_centre = 0.5 * (theta[:-1] + theta[1:])
        sector_centre = np.asarray(self.phi_edges) + 0.5 * self.sector_widths()
        sector_centre = np.mod(sector_centre + math.pi, TWO_PI) - math.pi
        return np.stack(
            [
                np.repeat(band_centre, self.n_sectors),
                np.tile(sector_centre, self.n_bands),
            ],
            axis=1,
        )


def hit_angles(events: EventSet) -> tuple[np.ndarray, np.ndarray]:
    """Polar angle theta in [0, pi] and azimuth phi in (-pi, pi] of every hit position.

    Needs the input columns x, y, z (any length unit; the origin is the collision point).
    Returns two [T] float64 arrays (rad).
    """
    missing = [c for c in ("x", "y", "z") if c not in events.input_names]
    if missing:
        raise UserError(
            f"domain decomposition needs input columns x, y, z; the events have "
            f"{list(events.input_names)}"
        )
    x, y, z = (events.inputs[:, events.input_names.index(c)].astype(np.float64) for c in "xyz")
    return np.arctan2(np.hypot(x, y), z), np.arctan2(y, x)


def region_membership(
    theta: np.ndarray, phi: np.ndarray, config: DecompositionConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Which regions every hit belongs to.

    Args:
        theta, phi: [T] hit angles (rad), as from ``hit_angles``.
        config: the regions.

    Returns:
        member: [T, R] bool, the hit lies in region r widened by the overlap.
        home: [T] int64, the one region holding the hit without the overlap.
    """
    edges = np.asarray(config.theta_edges, dtype=np.float64)
    margin = config.overlap
    home_band = np.clip(np.searchsorted(edges, theta, side="right") - 1, 0, config.n_bands - 1)
    in_band = (theta[:, None] >= edges[None, :-1] - margin) & (
        theta[:, None] <= edges[None, 1:] + margin
    )

    starts = np.asarray(config.phi_edges, dtype=np.float64)
    widths = config.sector_widths()
    # Azimuth measured from each sector's start, in [0, 2 pi): the wrap at +-pi vanishes.
    from_start = np.mod(phi[:, None] - starts[None, :], TWO_PI)
    home_sector = np.argmax(from_start < widths[None, :], axis=1)
    from_widened_start = np.mod(phi[:, None] - starts[None, :] + margin, TWO_PI)
    in_sector = from_widened_start < (widths + 2.0 * margin)[None, :]
    if config.n_sectors == 1:
        in_sector[:] = True  # one sector is the whole circle, however the angle rounds

    member = (in_band[:, :, None] & in_sector[:, None, :]).reshape(len(theta), -1)
    home = (home_band * config.n_sectors + home_sector).astype(np.int64)
    member[np.arange(len(home)), home] = True  # the home region holds the hit by definition
    return member, home


@dataclass
class RegionSplit:
    """Events cut into region events (T hits before, T' hit copies after, E' regions)."""

    events: EventSet  # the region events; extras source_event_id, source_row, region
    source_row: np.ndarray  # [T'] row of each copy in the undivided set
    region_of_event: np.ndarray  # [E'] region index of each region event
    source_of_event: np.ndarray  # [E'] position of each region event's source event
    home_region: np.ndarray  # [T] home region of each undivided hit
    config: DecompositionConfig


def split_into_regions(events: EventSet, config: DecompositionConfig) -> RegionSplit:
    """Cut every event into its non-empty regions, vectorised over all hits at once."""
    theta, phi = hit_angles(events)
    member, home = region_membership(theta, phi, config)
    row, region = np.nonzero(member)
    # One region event per (source event, region), hits in source order within it.
    key = events.hit_event_index()[row] * config.n_regions + region
    order = np.argsort(key, kind="stable")
    row, region, key = row[order], region[order], key[order]
    keys, starts, sizes = np.unique(key, return_index=True, return_counts=True)
    region_events = regroup_events(events, row, sizes, extras={REGION_COLUMN: region})
    return RegionSplit(
        events=region_events,
        source_row=row,
        region_of_event=region[starts],
        source_of_event=keys // config.n_regions,
        home_region=home,
        config=config,
    )


def merge_region_labels(split: RegionSplit, region_labels: np.ndarray) -> np.ndarray:
    """Merge per-region track labels into one assignment of the undivided events.

    Args:
        split: the decomposition (see ``split_into_regions``).
        region_labels: [T'] label of every hit copy, unique within its region event
            (-1 = unassigned).

    Returns:
        [T] int64 labels of the undivided hits (unique within each event; -1 where the home
        region left the hit unassigned), by the merge rule in the module docstring.
    """
    region_labels = np.asarray(region_labels, dtype=np.int64)
    n_hits = len(split.home_region)
    copy_event = split.events.hit_event_index()
    assigned = region_labels >= 0
    # A node is a track of one region event.
    node = np.full(len(region_labels), -1, dtype=np.int64)
    node[assigned], n_nodes = pair_codes(copy_event[assigned], region_labels[assigned])
    is_home = split.events.extras[REGION_COLUMN] == split.home_region[split.source_row]
    home_node = np.full(n_hits, -1, dtype=np.int64)
    home_node[split.source_row[is_home]] = node[is_home]
    if n_nodes == 0:  # nothing assigned anywhere
        return home_node

    # Every duplicated hit links the track holding its copy to the track of its home copy.
    a, b = node[~is_home], home_node[split.source_row[~is_home]]
    keep = (a >= 0) & (b >= 0)
    link, n_links = pair_codes(np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep]))
    shared = np.bincount(link, minlength=n_links)
    strong = shared[link] >= split.config.min_shared_hits
    # Repeated (a, b) entries just add up in the sparse matrix: only connectivity matters.
    graph = coo_matrix(
        (np.ones(int(strong.sum())), (a[keep][strong], b[keep][strong])),
        shape=(n_nodes, n_nodes),
    )
    _, component = connected_components(graph, directed=False)
    return np.where(home_node >= 0, component[np.maximum(home_node, 0)], -1).astype(np.int64)


def decomposition_report(events: EventSet, split: RegionSplit) -> dict[str, Any]:
    """How the split cut the events: regions, hits per region, duplicates, split particles.

    Returns a JSON-ready dict: ``n_regions``; ``region_centres`` ([R][theta, phi], rad);
    ``hits_per_region`` (mean hits of region r per event, over all events);
    ``region_events`` (non-empty region events); ``mean_hits_per_region_event``;
    ``duplicated_hits`` (copies beyond the first, i.e. overlap duplicates) and
    ``duplicate_share`` (of all hits); ``particles_split_share`` (particles, noise
    excluded, whose hits have more than one home region) and
    ``particles_in_several_regions_share`` (whose hits, overlap copies included, reach
    more than one region event).
    """
    config = split.config
    n_regions = config.n_regions
    region_of_copy = split.events.extras[REGION_COLUMN]
    track = events.particle_id != 0
    event_index = events.hit_event_index()
    particle_codes, n_particles = pair_codes(event_index[track], events.particle_id[track])

    def share_in_several(particle: np.ndarray, region: np.ndarray) -> float:
        """Share of particles whose (particle, region) pairs number more than one."""
        codes, n_pairs = pair_codes(particle, region)
        representative = np.zeros(n_pairs, dtype=np.int64)
        representative[codes] = particle
        counts = np.bincount(representative, minlength=n_particles)
        return float((counts > 1).mean()) if n_particles else 0.0

    copy_track = track[split.source_row]
    copy_particle = np.full(events.n_hits, -1, dtype=np.int64)
    copy_particle[track] = particle_codes
    duplicated = split.events.n_hits - events.n_hits
    return {
        "n_regions": n_regions,
        "theta_edges": list(config.theta_edges),
        "phi_edges": list(config.phi_edges),
        "overlap": config.overlap,
        "merge": config.merge,
        "region_centres": config.region_centres().round(4).tolist(),
        "hits_per_region": (
            np.bincount(region_of_copy, minlength=n_regions) / max(events.n_events, 1)
        )
        .round(2)
        .tolist(),
        "region_events": int(split.events.n_events),
        "mean_hits_per_region_event": float(split.events.sizes.mean()),
        "duplicated_hits": int(duplicated),
        "duplicate_share": float(duplicated / max(events.n_hits, 1)),
        "particles_split_share": share_in_several(particle_codes, split.home_region[track]),
        "particles_in_several_regions_share": share_in_several(
            copy_particle[split.source_row][copy_track], region_of_copy[copy_track]
        ),
    }


def write_region_file(
    source_path: str | Path,
    data_type: str,
    out_path: str | Path,
    config: DecompositionConfig,
    selection: EventSelection | None = None,
) -> dict[str, Any]:
    """Write the region events of a data file as a data file of the same type.

    A model meant to run on region events should be trained on region events (a region
    holds fewer tracks, in a narrow angular range, plus overlap fragments of its
    neighbours' tracks): this file feeds the one training loop unchanged.

    Args:
        source_path: REDVID CSV or converted TrackML hit table.
        data_type: "linear", "helical" or "trackml".
        out_path: output file (REDVID: .csv; TrackML: .parquet, .csv[.gz]).
        config: the regions.
        selection: which source events (e.g. a base model's train + val split); None = all.

    Returns:
        The ``decomposition_report`` of the written split plus ``path``. Every region event
        is one event of the file (event_id 0..E'-1) with the source rows' columns plus
        (REDVID and TrackML alike):

        * ``source_event_id``: the event_id of the hit's event in the source file (for a
          converted TrackML file, the sub-event id);
        * ``source_event``: the original event number: kept from the source when it has
          that column (a converted TrackML file: the TrackML event number, see
          ``trackml_data``), else the source event_id (``derived_data.with_source_columns``);
        * ``region``: the region index, ``band * n_sectors + sector``.
    """
    rows = read_rows(source_path, data_type)  # the file is read and validated once
    events = events_from_rows(rows, data_type, str(source_path))
    # EventSet rows are the file's rows stably sorted by event_id: align the raw rows so.
    rows = rows.sort_values("event_id", kind="stable").reset_index(drop=True)
    if selection is not None:
        events = events.subset(selection.positions(events.n_events))
        rows = rows[np.isin(rows["event_id"].to_numpy(np.int64), events.event_id)]
        rows = rows.reset_index(drop=True)
    if "hit_id" in rows.columns and not np.array_equal(
        rows["hit_id"].to_numpy(np.int64), events.hit_id
    ):
        raise ValueError(f"{source_path}: rows and loaded events are not aligned")
    split = split_into_regions(events, config)
    regions = with_source_columns(rows.iloc[split.source_row].reset_index(drop=True))
    regions["event_id"] = split.events.hit_event_index()
    regions[REGION_COLUMN] = split.events.extras[REGION_COLUMN]
    path = write_derived_rows(regions, data_type, out_path)
    return {"path": str(path), **decomposition_report(events, split)}
