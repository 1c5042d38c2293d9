"""The one inference path: model -> per-hit parameters -> clustering -> scores.

``evaluation/test.py``, ``evaluation/performance_stats.py`` and the end of training all
call these functions, so every number the project reports comes from the same code.

Clustering runs on the *normalised* predicted parameters (each target standardised with
the training-split statistics), so no parameter dominates the HDBSCAN distance merely
because of its unit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from data_processing.dataset import (
    DeviceEvents,
    EventSet,
    Normaliser,
    batch_event_indices,
    padded_batch,
)
from evaluation.clustering import ClusteringConfig, cluster_events
from evaluation.scoring import efficiencies, score_per_event
from model import TransformerRegressor


@torch.no_grad()
def predict_track_params(
    model: TransformerRegressor, data: DeviceEvents, batch_size: int = 256
) -> torch.Tensor:
    """Normalised per-hit track parameters for every hit of ``data``.

    Args:
        model: the regressor (switched to eval mode here).
        data: events on the model's device.
        batch_size: events per forward pass; batches are size-sorted to limit padding.

    Returns:
        [T, K] float32 tensor on the data's device, rows aligned with ``data``.
    """
    model.eval()
    out = torch.empty_like(data.targets)
    sizes = data.sizes.cpu().numpy()
    for index in batch_event_indices(sizes, batch_size, shuffle=False, sort_window=10**9):
        batch = padded_batch(data, torch.as_tensor(index, device=data.sizes.device))
        pred = model(batch.x, batch.layout)
        real = batch.rows >= 0
        out[batch.rows[real]] = pred[real].to(out.dtype)
    return out


def submission_frame(events: EventSet, labels: np.ndarray) -> pd.DataFrame:
    """TrackML-style submission for all events: event_id, hit_id, track_id."""
    return pd.DataFrame(
        {
            "event_id": np.repeat(events.event_id, events.sizes),
            "hit_id": events.hit_id,
            "track_id": labels,
        }
    )


@dataclass
class Reconstruction:
    """Result of running the pipeline on an EventSet (rows aligned with it)."""

    params: np.ndarray  # [T, K] normalised predicted parameters
    labels: np.ndarray  # [T] track labels, unique within an event
    timings: dict[str, float] = field(default_factory=dict)  # seconds, whole set


def reconstruct(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    clustering: ClusteringConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Reconstruction:
    """Predict parameters for every hit and cluster each event into tracks."""
    model = model.to(device)
    data = DeviceEvents.from_events(events, normaliser, device)
    start = time.perf_counter()
    params = predict_track_params(model, data, batch_size).cpu().numpy()
    model_s = time.perf_counter() - start
    start = time.perf_counter()
    labels = cluster_events(params, events.offsets, clustering)
    cluster_s = time.perf_counter() - start
    return Reconstruction(params, labels, {"model_s": model_s, "clustering_s": cluster_s})


def score_reconstruction(events: EventSet, labels: np.ndarray) -> dict[str, float]:
    """TrackML score (mean over events) and "trackformers" efficiencies (pooled)."""
    truth = events.truth_frame()
    submission = submission_frame(events, labels)
    per_event = score_per_event(truth, submission)
    result = {
        "trackml_score": float(per_event.mean()),
        "trackml_score_std": float(per_event.std(ddof=0)),
        "n_events": int(events.n_events),
    }
    result.update(efficiencies(truth, submission, definition="trackformers"))
    return result
