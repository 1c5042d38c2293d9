"""The TrackFormers regressor + HDBSCAN on the tracker's events, scored as the tracker is.

A side-by-side comparison must see the same hits and use the same metric code: the
regressor gets every hit the tracker's hit filter gets (the preset's volumes, noise and
low-pT particles included), as x, y, z in mm, one event at a time or in theta x phi
regions (``evaluation.decomposition``), and its labels go through ``tracker.evaluate.score``
(TrackML score, gnn_tracking and TrackFormers efficiencies). The hepattn and hit-filter
columns do not apply to it and are NaN.

    metrics = score_regressor("models/tml_200-500.pt", hits, eta_max=2.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import EventSet
from data_processing.hit_table import INPUT_COLUMNS, TARGET_COLUMNS
from evaluation.clustering import ClusteringConfig
from evaluation.decomposition import reconstruct_in_regions
from tracker.data import HitSet
from tracker.evaluate import score

#: Columns of ``tracker.evaluate.score`` that describe the filter or the query masks.
TRACKER_ONLY = ("hepattn_", "filter_", "decode_", "tracker_ms")
HEPATTN_COUNTS = (
    "n_particles",
    "n_matched_particles",
    "n_tracks",
    "n_matched_tracks",
    "n_duplicate_tracks",
    "n_fake_tracks",
)


def regressor_events(hits: HitSet) -> EventSet:
    """The hits of ``hits`` as the regressor's EventSet, row for row: inputs x, y, z (mm,
    the first three tracker features), zero targets (inference only)."""
    inputs = np.ascontiguousarray(hits.features[:, : len(INPUT_COLUMNS)], dtype=np.float32)
    return EventSet(
        inputs=inputs,
        targets=np.zeros((len(inputs), len(TARGET_COLUMNS)), dtype=np.float32),
        particle_id=hits.particle_id.astype(np.int64),
        hit_id=hits.hit_id.astype(np.int64),
        weight=hits.weight.astype(np.float32),
        event_id=hits.event_id.astype(np.int64),
        offsets=hits.offsets.astype(np.int64),
        input_names=INPUT_COLUMNS,
        target_names=TARGET_COLUMNS,
    )


def event_unique_track_ids(labels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-event labels [T] (-1: unassigned) -> track ids unique over all events."""
    event = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    stride = int(labels.max()) + 1 if len(labels) else 1
    return np.where(labels >= 0, event * stride + labels, -1).astype(np.int64)


def score_labels(hits: HitSet, labels: np.ndarray, eta_max: float) -> dict[str, Any]:
    """``tracker.evaluate.score`` of per-event track labels [T] (-1: unassigned, rows of
    ``hits``), without the tracker-only metrics."""
    result = {
        "track_id": event_unique_track_ids(labels, hits.offsets),
        "kept": np.ones(len(labels), dtype=bool),
        "hepattn": dict.fromkeys(HEPATTN_COUNTS, 0),  # no query masks: NaN rates, dropped
        "filter_s": [0.0],
        "tracker_s": [0.0],
        "decode_s": [0.0],
    }
    return {
        key: value
        for key, value in score(hits, result, eta_max).items()
        if not key.startswith(TRACKER_ONLY)
    }


@torch.no_grad()
def score_regressor(
    checkpoint: str,
    hits: HitSet,
    eta_max: float,
    regions: tuple[int, int, str] = (1, 1, "params"),
    overlap: float = 0.05,
) -> dict[str, Any]:
    """Run the regressor checkpoint (with its stored HDBSCAN settings, outliers
    unassigned as the published pipeline) over every event of ``hits`` and score it.

    Returns ``tracker.evaluate.score``'s metrics without the tracker-only ones, plus
    ``model_ms_per_event`` and ``clustering_ms_per_event`` (CPU, one event at a time
    for whole events).
    """
    state = load_checkpoint(checkpoint)
    model, normaliser = model_from_checkpoint(state)
    stored = state.get("clustering", {})
    clustering = ClusteringConfig(
        stored.get("min_cluster_size", 5), stored.get("min_samples", 2), noise="unassigned"
    )
    events = regressor_events(hits)
    labels, timings = reconstruct_in_regions(
        model, events, normaliser, clustering, regions, overlap
    )
    metrics = score_labels(hits, labels, eta_max)
    n_events = max(1, hits.n_events)
    metrics["model_ms_per_event"] = 1000 * timings["model_s"] / n_events
    metrics["clustering_ms_per_event"] = 1000 * timings["clustering_s"] / n_events
    return metrics
