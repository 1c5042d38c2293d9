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
from typing import Any

import numpy as np
import torch

from data_processing.batching import BatchPlan, DeviceEvents, batch_event_indices
from data_processing.dataset import EventSet, Normaliser
from evaluation.clustering import (
    ClusteringConfig,
    cluster_events,
    count_non_finite,
    submission_frame,
)
from evaluation.efficiencies import MatchSettings, efficiencies, efficiency_vs
from evaluation.scoring import score_per_event
from model import TransformerRegressor


@torch.no_grad()
def predict_track_params(
    model: TransformerRegressor,
    data: DeviceEvents,
    batch_size: int = 256,
    hits_per_batch: int | None = None,
) -> torch.Tensor:
    """Normalised per-hit track parameters for every hit of ``data``.

    Events are sorted by size and grouped under a hit budget, so a batch costs about
    the same whatever its events' sizes, and a huge event runs on its own. Batches are
    packed (no padding at all) where the ``flash`` kernel runs and padded to the
    batch's largest event otherwise. Runs under the caller's autocast, if any.

    Args:
        model: the regressor (switched to eval mode here).
        data: events on the model's device.
        batch_size: events per forward pass for events of average size.
        hits_per_batch: hit budget per forward pass; default ``batch_size`` times the
            mean event size.

    Returns:
        [T, K] float32 tensor on the data's device, rows aligned with ``data``.
    """
    model.eval()
    sizes = data.sizes.cpu().numpy()
    if hits_per_batch is None:
        hits_per_batch = batch_size * max(1, round(float(sizes.mean()))) if len(sizes) else 1
    batches = batch_event_indices(
        sizes, batch_size, shuffle=False, sort_window=10**9, hits_per_batch=hits_per_batch
    )
    plan = BatchPlan.from_batches(batches, sizes, data.sizes.device)
    # Any module taking (x, layout) works; packed hits only where the flash kernel runs.
    packs_hits = getattr(model, "packs_hits", None)
    packed = packs_hits is not None and packs_hits(data.sizes.device)
    # One spare last row: padded positions have row -1 and write their junk there, so
    # both layouts scatter with one index_put and no device-to-host sync.
    out = data.targets.new_empty(len(data.targets) + 1, data.targets.shape[-1])
    for i in range(len(plan)):
        batch = plan.batch(data, i, packed)
        pred = model(batch.x, batch.layout)
        out[batch.rows.reshape(-1)] = pred.reshape(-1, pred.shape[-1]).to(out.dtype)
    return out[:-1]


@dataclass
class Reconstruction:
    """Result of running the pipeline on an EventSet (rows aligned with it)."""

    params: np.ndarray  # [T, K] normalised predicted parameters
    labels: np.ndarray  # [T] track labels, unique within an event (-1: unassigned)
    timings: dict[str, float] = field(default_factory=dict)  # seconds, whole set
    n_non_finite: int = 0  # hits with a NaN/inf prediction (outliers; warned about)


def predict_events(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, float]:
    """Normalised predicted parameters [T, K] (numpy) of ``events`` and the model's seconds.

    The seconds cover ``predict_track_params`` and the copy back to the host (which
    waits for the device), not the normalisation and upload of the inputs.
    """
    model = model.to(device)
    data = DeviceEvents.from_events(events, normaliser, device)
    start = time.perf_counter()
    params = predict_track_params(model, data, batch_size).cpu().numpy()
    return params, time.perf_counter() - start


def reconstruct(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    clustering: ClusteringConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Reconstruction:
    """Predict parameters for every hit and cluster each event into tracks.

    Returns a ``Reconstruction`` whose timings are ``model_s`` (see ``predict_events``)
    and ``clustering_s`` (all events, over ``clustering.n_jobs`` processes), in seconds.
    Hits predicted NaN/inf are counted in ``n_non_finite`` and logged in one warning.
    """
    params, model_s = predict_events(model, events, normaliser, batch_size, device)
    n_non_finite = count_non_finite(params, events.hit_event_ids())
    start = time.perf_counter()
    labels = cluster_events(params, events.offsets, clustering)
    cluster_s = time.perf_counter() - start
    timings = {"model_s": model_s, "clustering_s": cluster_s}
    return Reconstruction(params, labels, timings, n_non_finite)


#: gnn_tracking pT thresholds (GeV) reported for TrackML data; 0.9 is the headline.
GNN_TRACKING_PT_THRESHOLDS = (0.0, 0.5, 0.9, 1.5)
#: The efficiencies of the paper's tables: "trackformers", no pT/eta cut.
PUBLISHED_EFFICIENCIES = MatchSettings()


def score_reconstruction(
    events: EventSet,
    labels: np.ndarray,
    settings: MatchSettings = PUBLISHED_EFFICIENCIES,
) -> dict[str, Any]:
    """TrackML score and efficiencies of a reconstruction.

    Args:
        events: the evaluated events (truth: particle_id, weight, extras).
        labels: [T] track labels aligned with ``events`` (``Reconstruction.labels``); a
            negative label is an unassigned hit, in no track (``evaluation.scoring``).
        settings: efficiency definition and cuts of the top-level keys (default: the
            published "trackformers" definition; "gnn_tracking" and pT cuts need TrackML
            layers and kinematics).

    Returns:
        A JSON-ready dict (floats may be NaN for an empty denominator):
        ``trackml_score`` (mean over events), ``trackml_score_std`` (over events),
        ``n_events``, ``definition``, ``pt_min``, the keys of
        ``evaluation.efficiencies.efficiencies`` for ``settings`` at the top level, and
        ``efficiencies``: {name: efficiencies dict} for "trackformers" and, when truth has
        volume_id/layer_id and pt/eta (TrackML hit tables), "gnn_tracking_pt<X>" for X in
        ``GNN_TRACKING_PT_THRESHOLDS``; with pt/eta also ``efficiency_vs_pt`` and
        ``efficiency_vs_eta`` (lists of per-bin records, see ``efficiency_vs``).
    """
    truth = events.truth_frame()
    submission = submission_frame(events.hit_event_ids(), events.hit_id, labels)
    per_event = score_per_event(truth, submission)
    result: dict[str, Any] = {
        "trackml_score": float(per_event.mean()),
        "trackml_score_std": float(per_event.std(ddof=0)),
        "n_events": int(events.n_events),
        "definition": settings.definition,
        "pt_min": float(settings.pt_min),
    }
    # Each setting is matched once: the headline one is usually one of the named sets
    # below (the default, trackformers without cuts, always is).
    computed: dict[MatchSettings, dict[str, Any]] = {}

    def efficiencies_for(chosen: MatchSettings) -> dict[str, Any]:
        if chosen not in computed:
            computed[chosen] = efficiencies(truth, submission, settings=chosen)
        return computed[chosen]

    has_kinematics = {"pt", "eta"} <= set(truth.columns)
    has_layers = {"volume_id", "layer_id"} <= set(truth.columns)
    named = {"trackformers": efficiencies_for(PUBLISHED_EFFICIENCIES)}
    if has_kinematics and has_layers:
        for threshold in GNN_TRACKING_PT_THRESHOLDS:
            gnn = MatchSettings("gnn_tracking", threshold)
            named[f"gnn_tracking_pt{threshold}"] = efficiencies_for(gnn)
    result.update(efficiencies_for(settings))
    result["efficiencies"] = named
    if has_kinematics:
        for variable in ("pt", "eta"):
            table = efficiency_vs(truth, submission, None, variable, settings=settings)
            result[f"efficiency_vs_{variable}"] = table.to_dict(orient="records")
    return result


def regression_errors(
    events: EventSet, normaliser: Normaliser, params: np.ndarray
) -> dict[str, Any]:
    """Mean squared error of the predicted track parameters over track hits.

    Noise hits (particle_id 0) have no target and are left out, as in the training loss.

    Args:
        events: the evaluated events (raw targets [T, K]).
        normaliser: the checkpoint's normaliser.
        params: [T, K] normalised predictions aligned with ``events``.

    Returns:
        ``mse_normalised``: MSE in standardised units, averaged over hits and parameters
        (comparable with the training/validation loss); ``mse`` and ``rmse``:
        {parameter name: value} in the parameter's physical unit (squared for mse);
        ``n_hits``: track hits counted.
    """
    track = events.particle_id != 0
    predicted = params[track].astype(np.float64)
    target = normaliser.normalise_targets(events.targets[track]).astype(np.float64)
    physical = normaliser.denormalise_targets(params[track]).astype(np.float64)
    squared = (physical - events.targets[track].astype(np.float64)) ** 2
    mse = squared.mean(axis=0) if len(squared) else np.full(params.shape[1], np.nan)
    return {
        "mse_normalised": float(((predicted - target) ** 2).mean()) if track.any() else None,
        "mse": dict(zip(events.target_names, map(float, mse), strict=True)),
        "rmse": dict(zip(events.target_names, map(float, np.sqrt(mse)), strict=True)),
        "n_hits": int(track.sum()),
    }
