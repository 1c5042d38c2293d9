"""Density clustering of predicted track parameters into tracks (HDBSCAN).

Input: per-hit predicted parameters [T, K] of many events stored flat, with event
offsets [E + 1] (as in ``EventSet``). Output: per-hit track labels [T], unique within
each event. Events are independent, so they are clustered in parallel over a process
pool when ``n_jobs > 1``.

Two implementations give the same label semantics: the ``hdbscan`` package (the
reference's choice, fastest on large events) and scikit-learn's ``HDBSCAN``. Both run
with the same parameters (euclidean metric, excess-of-mass selection, no single-cluster
result); ``min_samples`` always means the hdbscan package's (and the reference's) value,
passed to scikit-learn as ``min_samples + 1`` because scikit-learn counts the point
itself. Clusters are numbered 0, 1, ... and every outlier is -1 (scikit-learn's special
labels -2 "infinite" and -3 "missing" are folded into -1). An event with fewer hits than
``min_cluster_size`` is all outliers without calling either.

The two build the same mutual-reachability minimum spanning tree weights, so they give
the same partition whenever that tree is unique (well-separated tracks). Mutual
reachability max(core(a), core(b), d(a, b)) makes tied edge weights common, though, and
ties are broken differently (as they are between the hdbscan package's own algorithms):
on poorly separated predictions single events can differ, the averaged scores agree
closely (measured: see ``tests/test_clustering.py``).

HDBSCAN's outliers must not become one shared (and badly impure) track: by default each
becomes its own singleton track ("singleton", numbered after the clusters); "unassigned"
keeps -1, which every metric of ``evaluation.scoring`` reads as "in no track".

A hit whose predicted parameters hold a NaN or inf (a diverged model, an fp16 overflow)
cannot be placed by HDBSCAN and ends up an outlier; :func:`count_non_finite` counts such
hits and logs one warning, so they are never lost silently.

``grid_search`` scans (min_cluster_size, min_samples) pairs on a validation split and
returns the pair with the best TrackML score.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from data_processing.errors import UserError

if TYPE_CHECKING:  # pandas is imported where it is used: --help stays fast
    import pandas as pd

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("hdbscan", "sklearn")
NOISE_POLICIES = ("singleton", "unassigned")

# Published (min_cluster_size, min_samples) per data set (SPEC section 5).
PUBLISHED_HDBSCAN: dict[str, tuple[int, int]] = {
    "linear:3": (2, 3),
    "linear:1-20": (4, 2),
    "linear:10-50": (4, 2),
    "helical:3": (2, 3),
    "helical:1-20": (5, 2),
    "helical:10-50": (4, 2),
    "helical:50-100": (4, 2),
    "trackml:10-50": (5, 2),
    "trackml:50-100": (5, 3),
    "trackml:200-500": (5, 2),
}

#: Default grid of ``grid_search``: it spans every published setting and one step beyond.
DEFAULT_GRID_MIN_CLUSTER_SIZE = (2, 3, 4, 5, 6)
DEFAULT_GRID_MIN_SAMPLES = (1, 2, 3, 4)


@dataclass(frozen=True)
class ClusteringConfig:
    """HDBSCAN settings. See ``PUBLISHED_HDBSCAN`` for the per-data-set defaults.

    Attributes:
        min_cluster_size: smallest group of hits HDBSCAN calls a cluster (>= 2).
        min_samples: neighbours (the point included) defining a point's core distance.
        implementation: "hdbscan" (the package) or "sklearn" (sklearn.cluster.HDBSCAN).
        noise: "singleton" (each outlier its own track) or "unassigned" (label -1).
        n_jobs: processes clustering events in parallel; -1 = all cores, 1 = in-process.
        allow_single_cluster: let HDBSCAN return one cluster for the whole input. Off by
            default (as published); turn it on where an input may hold a single track,
            e.g. one region of a decomposed event or one refined cluster.
        one_track_fallback: when HDBSCAN finds no cluster at all in an event of at
            least ``min_cluster_size`` hits (every hit an outlier), call the whole event
            one track. HDBSCAN never returns its whole input as one cluster (even with
            ``allow_single_cluster`` it keeps outliers), so without this an event
            holding one track scores 0 (about 5 % of the events of a 1-20-track set);
            the fallback cannot lower any event's score, which is 0 before it.
    """

    min_cluster_size: int = 5
    min_samples: int = 2
    implementation: str = "hdbscan"
    noise: str = "singleton"
    n_jobs: int = 1
    allow_single_cluster: bool = False
    one_track_fallback: bool = True

    def __post_init__(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise UserError(
                f"unknown clustering implementation {self.implementation!r}; use {IMPLEMENTATIONS}"
            )
        if self.noise not in NOISE_POLICIES:
            raise UserError(f"unknown noise policy {self.noise!r}; use {NOISE_POLICIES}")
        if self.min_cluster_size < 2 or self.min_samples < 1:
            raise UserError(
                f"HDBSCAN needs min_cluster_size >= 2 and min_samples >= 1 (got "
                f"{self.min_cluster_size} and {self.min_samples})"
            )


def published_setting(data_type: str, tracks: str) -> tuple[int, int] | None:
    """Published (min_cluster_size, min_samples) for e.g. ("helical", "10-50"), or None."""
    return PUBLISHED_HDBSCAN.get(f"{data_type}:{tracks}")


def _hdbscan_labels(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Raw HDBSCAN labels [n] (int64, -1 = outlier) of points [n, K], n >= 2."""
    points = np.ascontiguousarray(params, dtype=np.float64)
    if config.implementation == "hdbscan":
        import hdbscan

        # One core per event: parallelism comes from clustering events concurrently.
        clusterer = hdbscan.HDBSCAN(
            min_cluster_size=config.min_cluster_size,
            min_samples=config.min_samples,
            allow_single_cluster=config.allow_single_cluster,
            core_dist_n_jobs=1,
        )
    else:
        from sklearn.cluster import HDBSCAN

        # scikit-learn's min_samples counts the point itself, the hdbscan package's does
        # not (scikit-learn's HDBSCAN notes): +1 gives the same core distances, hence the
        # same mutual-reachability tree. scikit-learn refuses min_samples > n; the
        # hdbscan package then calls every point an outlier, as scikit-learn does with
        # min_samples = n (tested).
        clusterer = HDBSCAN(
            min_cluster_size=config.min_cluster_size,
            min_samples=min(config.min_samples + 1, len(points)),
            allow_single_cluster=config.allow_single_cluster,
            copy=False,  # ``points`` is ours to overwrite
        )
    labels = clusterer.fit_predict(points).astype(np.int64)
    labels[labels < 0] = -1  # scikit-learn: -2 infinite, -3 missing values
    return labels


def cluster_event(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Cluster one event's predicted parameters [n, K] into track labels [n] (int64).

    Labels are >= 0 except for HDBSCAN outliers under the "unassigned" policy (-1).
    """
    n_hits = len(params)
    if n_hits < config.min_cluster_size:
        # No cluster can exist; both implementations would say so, slower.
        labels = np.full(n_hits, -1, dtype=np.int64)
    else:
        labels = _hdbscan_labels(params, config)
        if config.one_track_fallback and labels.max() < 0:
            labels[:] = 0
    if config.noise == "singleton":
        outlier = labels < 0
        labels[outlier] = labels.max(initial=-1) + 1 + np.arange(int(outlier.sum()))
    return labels


def count_non_finite(params: np.ndarray, event_id: np.ndarray, what: str = "hits") -> int:
    """Count hits with a NaN or inf predicted parameter; log ONE warning if there are any.

    HDBSCAN cannot place such a hit (the hdbscan package labels it -1, scikit-learn -2 or
    -3), so it becomes an outlier: a singleton track, or unassigned. Call this once per
    evaluated set, before clustering, so the loss is counted and reported, not silent.

    Args:
        params: [T, K] predicted parameters.
        event_id: [T] event id of each hit (named in the warning).
        what: names the set in the warning, e.g. "validation hits".

    Returns:
        Number of rows of ``params`` holding at least one non-finite value.
    """
    if len(event_id) != len(params):
        raise ValueError(f"event_id has {len(event_id)} rows but params {len(params)}")
    bad = ~np.isfinite(params).all(axis=1)
    n_bad = int(bad.sum())
    if n_bad:
        events = np.unique(np.asarray(event_id)[bad])
        shown = ", ".join(str(e) for e in events[:5])
        log.warning(
            "%d of %d %s (in %d events, first event_id %s) have non-finite (NaN/inf) "
            "predicted parameters, e.g. from a diverged model or an fp16 overflow; HDBSCAN "
            "cannot place them, so each becomes an outlier (its own singleton track, or "
            "unassigned)",
            n_bad,
            len(params),
            what,
            len(events),
            shown,
        )
    return n_bad


def _cluster_chunk(params: np.ndarray, offsets: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Labels [offsets[-1]] of consecutive events ``params[offsets[i]:offsets[i+1]]``."""
    if len(offsets) < 2:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(
        [cluster_event(params[a:b], config) for a, b in itertools.pairwise(offsets)]
    )


def _resolve_jobs(n_jobs: int) -> int:
    return (os.cpu_count() or 1) if n_jobs == -1 else max(1, n_jobs)


def _cluster_many(
    params: np.ndarray, offsets: np.ndarray, configs: Sequence[ClusteringConfig], n_jobs: int
) -> list[np.ndarray]:
    """Labels [T] of every event under each of ``configs``, over one process pool.

    Events are cut into contiguous chunks (each task's data one slice, cheap to pickle);
    all (config, chunk) tasks share a single pool, so a grid search starts it once.
    """
    n_events = len(offsets) - 1
    if n_events <= 0:
        return [np.empty(0, dtype=np.int64) for _ in configs]
    n_jobs = _resolve_jobs(n_jobs)
    n_chunks = min(n_events, n_jobs * 4)
    if n_jobs <= 1 or n_chunks * len(configs) == 1:
        return [_cluster_chunk(params, offsets, config) for config in configs]
    bounds = np.linspace(0, n_events, n_chunks + 1).astype(int)
    chunks = [
        (params[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a])
        for a, b in itertools.pairwise(bounds)
    ]
    tasks = [(p, o, config) for config in configs for p, o in chunks]
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        parts = list(pool.map(_cluster_chunk, *zip(*tasks, strict=True)))
    return [np.concatenate(parts[i * n_chunks : (i + 1) * n_chunks]) for i in range(len(configs))]


def cluster_events(params: np.ndarray, offsets: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Cluster every event of a flat prediction array.

    Args:
        params: [T, K] predicted parameters of all hits, events contiguous.
        offsets: [E + 1] start row of each event, offsets[-1] == T.
        config: clustering settings; ``n_jobs`` processes (-1 = all cores).

    Returns:
        [T] int64 track labels, unique within each event.
    """
    return _cluster_many(params, offsets, [config], config.n_jobs)[0]


def cluster_events_timed(
    params: np.ndarray, offsets: np.ndarray, config: ClusteringConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster event by event in this process and time each event.

    Same labels as :func:`cluster_events` (``n_jobs`` is ignored: a per-event latency is
    only meaningful without other events competing for the cores).

    Returns:
        ([T] int64 labels, [E] float64 wall seconds per event).
    """
    labels = np.empty(len(params), dtype=np.int64)
    seconds = np.empty(len(offsets) - 1, dtype=np.float64)
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        start = time.perf_counter()
        labels[a:b] = cluster_event(params[a:b], config)
        seconds[i] = time.perf_counter() - start
    return labels, seconds


def submission_frame(event_id: np.ndarray, hit_id: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The TrackML submission of a labelling: columns event_id, hit_id, track_id.

    The one place a submission frame is built (evaluation, grid search, timing).

    Args:
        event_id: [T] event id of every hit (``EventSet.hit_event_ids()``).
        hit_id: [T] hit ids.
        labels: [T] track labels, unique within an event; a negative label (HDBSCAN's -1
            under the "unassigned" noise policy) is a hit in no track for every score.
    """
    import pandas as pd

    return pd.DataFrame({"event_id": event_id, "hit_id": hit_id, "track_id": labels})


def grid_search(
    params: np.ndarray,
    offsets: np.ndarray,
    truth: pd.DataFrame,
    grid_min_cluster_size: Sequence[int] = DEFAULT_GRID_MIN_CLUSTER_SIZE,
    grid_min_samples: Sequence[int] = DEFAULT_GRID_MIN_SAMPLES,
    base: ClusteringConfig | None = None,
) -> tuple[pd.DataFrame, tuple[int, int]]:
    """Score every (min_cluster_size, min_samples) pair; return the table and the best pair.

    Run it on the validation split, never on the test split that reports the result.
    Unassigned hits (``base.noise == "unassigned"``) are in no track for the scores; hits
    with non-finite parameters are counted and warned about (:func:`count_non_finite`).

    Args:
        params: [T, K] predicted (normalised) parameters, events contiguous.
        offsets: [E + 1] event offsets into ``params``.
        truth: T rows aligned with ``params``: ``event_id, hit_id, particle_id, weight``
            (``EventSet.truth_frame()``).
        grid_min_cluster_size, grid_min_samples: the values to combine (all pairs).
        base: the other clustering settings (implementation, noise, n_jobs); default
            ``ClusteringConfig()``.

    Returns:
        (table, (min_cluster_size, min_samples)). The table has one row per pair, in grid
        order (min_cluster_size outer, min_samples inner): ``min_cluster_size``,
        ``min_samples``, ``trackml_score`` (mean over events), ``trackml_score_std``,
        ``perfect``, ``double_majority``, ``lhc``, ``fake_rate`` ("trackformers"
        efficiencies). The best pair has the highest mean score; ties go to the first
        pair in grid order.
    """
    import pandas as pd

    from evaluation.efficiencies import efficiencies
    from evaluation.scoring import score_per_event

    if len(truth) != len(params):
        raise ValueError(f"truth has {len(truth)} rows but params {len(params)}")
    base = base or ClusteringConfig()
    pairs = list(itertools.product(grid_min_cluster_size, grid_min_samples))
    if not pairs:
        raise ValueError("grid_search needs at least one value of each parameter")
    configs = [replace(base, min_cluster_size=int(mcs), min_samples=int(ms)) for mcs, ms in pairs]
    count_non_finite(params, truth["event_id"].to_numpy(), "grid-search hits")
    all_labels = _cluster_many(params, offsets, configs, base.n_jobs)
    rows = []
    for config, labels in zip(configs, all_labels, strict=True):
        submission = submission_frame(
            truth["event_id"].to_numpy(), truth["hit_id"].to_numpy(), labels
        )
        scores = score_per_event(truth, submission)
        found = efficiencies(truth, submission)
        rows.append(
            {
                "min_cluster_size": config.min_cluster_size,
                "min_samples": config.min_samples,
                "trackml_score": float(scores.mean()),
                "trackml_score_std": float(scores.std(ddof=0)),
                **{k: found[k] for k in ("perfect", "double_majority", "lhc", "fake_rate")},
            }
        )
    table = pd.DataFrame(rows)
    best = table.iloc[int(np.argmax(table["trackml_score"].to_numpy()))]
    return table, (int(best["min_cluster_size"]), int(best["min_samples"]))
