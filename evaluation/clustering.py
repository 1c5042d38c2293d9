"""Density clustering of predicted track parameters into tracks (HDBSCAN).

Input: per-hit predicted parameters [T, K] of many events stored flat, with event
offsets [E + 1] (as in ``EventSet``). Output: per-hit track labels [T], unique within
each event. Events are independent, so they are clustered in parallel over a process
pool when ``n_jobs > 1``.

HDBSCAN labels outliers -1. Those hits must not become one shared (and badly impure)
track: by default each becomes its own singleton track ("singleton"); "unassigned" keeps
-1, for metrics that ignore unassigned hits.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class ClusteringConfig:
    """HDBSCAN settings. See ``PUBLISHED_HDBSCAN`` for the per-data-set defaults."""

    min_cluster_size: int = 5
    min_samples: int = 2
    implementation: str = "hdbscan"
    noise: str = "singleton"
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown clustering implementation {self.implementation!r}")
        if self.noise not in NOISE_POLICIES:
            raise ValueError(f"unknown noise policy {self.noise!r}; use {NOISE_POLICIES}")
        if self.min_cluster_size < 2 or self.min_samples < 1:
            raise ValueError("need min_cluster_size >= 2 and min_samples >= 1")


def published_setting(data_type: str, tracks: str) -> tuple[int, int] | None:
    """Published (min_cluster_size, min_samples) for e.g. ("helical", "10-50"), or None."""
    return PUBLISHED_HDBSCAN.get(f"{data_type}:{tracks}")


def _hdbscan_labels(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    if config.implementation == "hdbscan":
        import hdbscan

        # One core per event: parallelism comes from clustering events concurrently.
        clusterer = hdbscan.HDBSCAN(
            min_cluster_size=config.min_cluster_size,
            min_samples=config.min_samples,
            core_dist_n_jobs=1,
        )
    else:
        from sklearn.cluster import HDBSCAN

        clusterer = HDBSCAN(
            min_cluster_size=config.min_cluster_size,
            min_samples=min(config.min_samples, len(params)),
        )
    return clusterer.fit_predict(params.astype(np.float64)).astype(np.int64)


def cluster_event(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Cluster one event's predicted parameters [n, K] into track labels [n] (int64).

    Labels are >= 0 except for HDBSCAN outliers under the "unassigned" policy (-1).
    """
    n_hits = len(params)
    if n_hits < 2:
        labels = np.full(n_hits, -1, dtype=np.int64)
    else:
        labels = _hdbscan_labels(params, config)
    if config.noise == "singleton":
        outlier = labels < 0
        labels[outlier] = labels.max(initial=-1) + 1 + np.arange(int(outlier.sum()))
    return labels


def _cluster_chunk(params: np.ndarray, offsets: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    return np.concatenate(
        [cluster_event(params[a:b], config) for a, b in itertools.pairwise(offsets)]
    )


def cluster_events(params: np.ndarray, offsets: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Cluster every event of a flat prediction array.

    Args:
        params: [T, K] predicted parameters of all hits, events contiguous.
        offsets: [E + 1] start row of each event, offsets[-1] == T.
        config: clustering settings; ``n_jobs`` processes (-1 = all cores).

    Returns:
        [T] int64 track labels, unique within each event.
    """
    n_events = len(offsets) - 1
    if n_events == 0:
        return np.empty(0, dtype=np.int64)
    n_jobs = (os.cpu_count() or 1) if config.n_jobs == -1 else config.n_jobs
    n_chunks = min(n_events, max(1, n_jobs) * 4)
    if n_jobs <= 1 or n_chunks == 1:
        return _cluster_chunk(params, offsets, config)
    # Contiguous event chunks keep each task's data one slice, cheap to pickle.
    bounds = np.linspace(0, n_events, n_chunks + 1).astype(int)
    tasks = [
        (params[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a], config)
        for a, b in itertools.pairwise(bounds)
    ]
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        parts = list(pool.map(_cluster_chunk, *zip(*tasks, strict=False)))
    return np.concatenate(parts)
