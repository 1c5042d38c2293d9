"""One evaluation run of a checkpoint: load, predict, cluster, score, draw.

The steps every evaluation tool shares, written once: :func:`load_setup` loads the
checkpoint, its model (best weights), normaliser, events and clustering settings from an
:class:`~evaluation.options.EvaluationOptions`; :func:`load_tuned_setup` adds test.py's
checks and grid search (an :class:`~evaluation.options.EvaluationConfig`);
:func:`evaluate_checkpoint` runs the whole pipeline of ``evaluation/test.py`` and returns
its metrics. The command line is ``evaluation/test.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import EventSet, Normaliser, load_events, split_events
from data_processing.errors import UserError
from data_processing.redvid import SimulationConfig
from evaluation.checkpoint_data import is_training_file, simulated_data, training_data_path
from evaluation.clustering import ClusteringConfig, grid_search
from evaluation.efficiencies import MatchSettings
from evaluation.inference import (
    predict_events,
    reconstruct,
    regression_errors,
    score_reconstruction,
)
from evaluation.options import (
    EvaluationConfig,
    EvaluationOptions,
    check_writable_dir,
    check_writable_file,
)
from evaluation.plotting import (
    LENGTH_UNITS,
    plot_efficiency_vs,
    plot_event_display,
    plot_parameter_heatmaps,
)
from evaluation.scoring import misassigned_hits
from evaluation.tml_test_sets import KIND as TML_TEST_SETS
from evaluation.tml_test_sets import default_test_file
from model import TransformerRegressor


@dataclass
class EvaluationSetup:
    """What every evaluation script needs, loaded once from the checkpoint."""

    state: dict[str, Any]
    model: TransformerRegressor
    normaliser: Normaliser
    events: EventSet
    clustering: ClusteringConfig
    device: torch.device
    data_type: str
    tuning: dict[str, Any] | None = None  # the grid search's result (see tune_clustering)


def evaluation_events(state: dict[str, Any], config: EvaluationOptions) -> EventSet:
    """The events to evaluate on.

    With the checkpoint's own data file, ``split="auto"`` means its held-out test split
    (rebuilt from the stored seed and fractions); with another file, all of its events.
    A checkpoint that names its own test set (``test_set``, shipped models) is evaluated
    on that set, simulated from its seed into ./data if absent (with ``max_events`` below
    its size: a set of that many events with the same seed), unless ``data_path`` or
    a train/val/test split (of its training file) is asked for. A missing training file
    that training generated is simulated again the same way (``checkpoint_data``).
    """
    data = state["data"]
    if config.data_path is None and "test_set" in state and config.split in ("auto", "all"):
        settings = dict(state["test_set"])
        if settings.get("kind") == TML_TEST_SETS:  # a TrackML model's sub-event sets
            test_file = default_test_file(settings, config.max_events)
            return load_events(test_file, "trackml", max_nr_hits=None)
        if config.max_events is not None and config.max_events < settings["n_events"]:
            # A smaller set of the same seed (as shipped_models' CI sets): simulating the
            # whole test set to keep N of its events would cost the whole set's time.
            settings["n_events"] = config.max_events
        simulation = SimulationConfig(**settings)
        return load_events(simulated_data(simulation), simulation.track_type, max_nr_hits=None)
    if config.data_path is None:
        path, own_file = training_data_path(state, config.model_name), True
    else:
        path, own_file = Path(config.data_path), is_training_file(config.data_path, state)
    data_type = config.data_type or data["data_type"]
    events = load_events(path, data_type, max_nr_hits=None)
    split = config.split
    if split == "auto":
        split = "test" if own_file else "all"
    if split != "all":
        parts = split_events(events.n_events, tuple(data["split_fractions"]), data["split_seed"])
        events = events.subset(parts[("train", "val", "test").index(split)])
    return _first_events(events, config.max_events)


def _first_events(events: EventSet, max_events: int | None) -> EventSet:
    if max_events is None:
        return events
    return events.subset(np.arange(min(max_events, events.n_events)))


def clustering_for(state: dict[str, Any], config: EvaluationOptions) -> ClusteringConfig:
    """HDBSCAN settings: command line first, then the checkpoint, then (5, 2)."""
    stored = state.get("clustering", {})
    return ClusteringConfig(
        min_cluster_size=config.min_cluster_size or stored.get("min_cluster_size", 5),
        min_samples=config.min_samples or stored.get("min_samples", 2),
        implementation=config.cluster_implementation,
        noise=config.noise,
        n_jobs=config.cluster_jobs,
        one_track_fallback=config.one_track_fallback,
    )


def load_setup(config: EvaluationOptions) -> EvaluationSetup:
    """Everything an evaluation tool needs, prepared the one way they all share.

    Loads the checkpoint, model (best weights, eval mode), normaliser, events and the
    clustering settings (command line, else the checkpoint's). Any tool's settings
    dataclass that inherits ``EvaluationOptions`` is accepted.
    """
    device = torch.device(config.device)
    state = load_checkpoint(config.model_name, device)
    model, normaliser = model_from_checkpoint(state)
    return EvaluationSetup(
        state=state,
        model=model.to(device),
        normaliser=normaliser,
        events=evaluation_events(state, config),
        clustering=clustering_for(state, config),
        device=device,
        data_type=config.data_type or state["data"]["data_type"],
    )


def load_tuned_setup(config: EvaluationConfig) -> EvaluationSetup:
    """``load_setup`` plus test.py's checks and grid search.

    Checks that the events support the requested efficiencies (before any model run)
    and, with ``config.grid_search``, tunes the clustering on the validation split
    (``setup.tuning``, ``setup.clustering`` set to the best pair).
    """
    setup = load_setup(config)
    check_truth_supports(setup.events, config)
    if config.grid_search:
        setup.tuning = tune_clustering(setup, config)
        mcs, ms = setup.tuning["best"]
        setup.clustering = replace(setup.clustering, min_cluster_size=mcs, min_samples=ms)
    return setup


def tune_clustering(setup: EvaluationSetup, config: EvaluationConfig) -> dict[str, Any]:
    """Grid search of (min_cluster_size, min_samples) on the validation split.

    The validation split is the one of the checkpoint's own data file (the file the
    model was trained on), whatever file is evaluated, so the test events never choose
    their own clustering. Returns {"table": per-pair records, "best": [mcs, ms],
    "n_events": validation events}.
    """
    val_config = replace(config, data_path=None, data_type=None, split="val")
    val_events = evaluation_events(setup.state, val_config)
    params, _ = predict_events(
        setup.model, val_events, setup.normaliser, config.batch_size, setup.device
    )
    table, best = grid_search(
        params,
        val_events.offsets,
        val_events.truth_frame(),
        config.grid_min_cluster_size,
        config.grid_min_samples,
        setup.clustering,
    )
    return {
        "table": table.to_dict(orient="records"),
        "best": list(best),
        "n_events": int(val_events.n_events),
    }


def write_figures(
    setup: EvaluationSetup,
    params: np.ndarray,
    labels: np.ndarray,
    metrics: dict[str, Any],
    config: EvaluationConfig,
) -> list[str]:
    """Heatmaps, residuals, event display and efficiency plots into ``output_dir``."""
    events, out_dir = setup.events, Path(config.output_dir)
    title = Path(config.model_name).stem
    track = events.particle_id != 0
    paths = []
    if track.any():
        paths += plot_parameter_heatmaps(
            setup.normaliser.denormalise_targets(params[track]),
            events.targets[track],
            events.target_names,
            out_dir,
            title=title,
        )
    if {"x", "y", "z"} <= set(events.input_names):
        columns = [events.input_names.index(c) for c in ("x", "y", "z")]
        index = min(max(config.display_event, 0), events.n_events - 1)
        a, b = events.offsets[index], events.offsets[index + 1]
        paths.append(
            plot_event_display(
                events.inputs[a:b][:, columns],
                events.particle_id[a:b],
                labels[a:b],
                misassigned_hits(events.particle_id[a:b], labels[a:b]),
                out_dir / "event_display.png",
                LENGTH_UNITS.get(setup.data_type, ""),
                title=f"{title}, event {events.event_id[index]}:",
            )
        )
    for variable in ("pt", "eta"):
        if f"efficiency_vs_{variable}" in metrics:
            table = pd.DataFrame(metrics[f"efficiency_vs_{variable}"])
            paths.append(
                plot_efficiency_vs(
                    table, variable, out_dir / f"efficiency_{variable}.png", title=title
                )
            )
    return [str(p) for p in paths]


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write ``metrics`` as indented, key-sorted strict JSON (see ``json_ready``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(metrics), indent=2, sort_keys=True))
    return path


def report_and_write(
    results: dict[str, Any],
    output: str | Path | None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Show ``results`` to ``report`` first (a failing write never loses them), then write
    them to ``output`` (``write_json``) when one is given; returns ``results``."""
    if report is not None:
        report(results)
    if output:
        write_json(results, output)
    return results


def check_truth_supports(events: EventSet, config: EvaluationConfig) -> None:
    """Fail before any model run when the data cannot give the requested efficiencies."""
    columns = set(events.extras)
    wants_kinematics = config.pt_min > 0 or config.definition == "gnn_tracking"
    if wants_kinematics and not {"pt", "eta"} <= columns:
        raise UserError(
            f"--pt_min / --definition gnn_tracking need particle kinematics (pt, eta) in the "
            f"hit table; these events carry only {sorted(columns) or 'no extra columns'}"
        )
    if config.definition == "gnn_tracking" and not {"volume_id", "layer_id"} <= columns:
        raise UserError("--definition gnn_tracking needs volume_id and layer_id (TrackML)")


def check_outputs(config: EvaluationConfig) -> None:
    """Refuse unwritable ``--output`` / ``--output_dir`` before any work starts."""
    if config.output:
        check_writable_file(config.output, "--output")
    if config.output_dir:
        check_writable_dir(config.output_dir, "--output_dir")


def evaluate_checkpoint(
    config: EvaluationConfig, report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the whole pipeline for one checkpoint; returns the metrics dict.

    Output paths are checked first (``check_outputs``); ``report`` (e.g. printing) sees
    the metrics before any file is written, so a failing write never loses them.

    Keys: those of ``score_reconstruction`` (score, efficiencies), ``regression``
    (``regression_errors``), ``model_name``, ``data_type``, ``clustering`` (the settings
    used), ``timings_s`` (whole set: model, clustering), ``grid_search`` (with
    ``--grid_search``), ``n_non_finite_hits`` (hits predicted NaN/inf, see
    ``reconstruct``) and ``figures`` (with ``output_dir``).
    """
    check_outputs(config)
    setup = load_tuned_setup(config)
    result = reconstruct(
        setup.model,
        setup.events,
        setup.normaliser,
        setup.clustering,
        config.batch_size,
        setup.device,
    )
    settings = MatchSettings(config.definition, config.pt_min)
    metrics = score_reconstruction(setup.events, result.labels, settings)
    metrics.update(
        {
            "regression": regression_errors(setup.events, setup.normaliser, result.params),
            "model_name": str(config.model_name),
            "data_type": setup.data_type,
            "clustering": asdict(setup.clustering),
            "timings_s": result.timings,
            "n_non_finite_hits": result.n_non_finite,
        }
    )
    if setup.tuning is not None:
        metrics["grid_search"] = setup.tuning
    if report is not None:
        report(metrics)
    if config.output_dir:
        metrics["figures"] = write_figures(setup, result.params, result.labels, metrics, config)
        write_json(metrics, Path(config.output_dir) / "metrics.json")
    if config.output:
        write_json(metrics, config.output)
    return metrics
