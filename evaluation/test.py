"""Evaluate a trained checkpoint: predict, cluster with HDBSCAN, score, plot.

Usage:
    python evaluation/test.py --model_name runs/transformer_regressor.pt
    python evaluation/test.py --model_name m.pt --output_dir runs/eval --grid_search
    python evaluation/test.py --model_name m.pt --data_path other.csv --split all

Everything about the model and its data (architecture, normalisation, data file, split
seed, clustering settings) is read from the checkpoint; options here only override.
With ``--output_dir`` it writes ``metrics.json``, a predicted-vs-true heatmap with a
residual histogram per regressed parameter (physical units), an overview of all of them,
an event display and, where truth has pT/eta (TrackML), efficiency-vs-pT/eta plots.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import EventSet, Normaliser, load_events, split_events
from data_processing.redvid import SimulationConfig
from evaluation.checkpoint_data import is_training_file, simulated_data, training_data_path
from evaluation.clustering import (
    DEFAULT_GRID_MIN_CLUSTER_SIZE,
    DEFAULT_GRID_MIN_SAMPLES,
    IMPLEMENTATIONS,
    NOISE_POLICIES,
    ClusteringConfig,
    grid_search,
)
from evaluation.inference import (
    predict_events,
    reconstruct,
    regression_errors,
    score_reconstruction,
)
from evaluation.plotting import (
    LENGTH_UNITS,
    plot_efficiency_vs,
    plot_event_display,
    plot_parameter_heatmaps,
)
from evaluation.scoring import misassigned_hits
from model import TransformerRegressor

SPLITS = ("auto", "train", "val", "test", "all")
DEFINITIONS = ("trackformers", "gnn_tracking")


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run; None means "as stored in the checkpoint"."""

    model_name: str
    data_path: str | None = None
    data_type: str | None = None
    split: str = "auto"
    max_events: int | None = None  # first N events of the split (and of the val split)
    min_cluster_size: int | None = None
    min_samples: int | None = None
    cluster_implementation: str = "hdbscan"
    noise: str = "singleton"
    one_track_fallback: bool = True  # an event where HDBSCAN finds no cluster is one track
    cluster_jobs: int = -1
    batch_size: int = 256
    device: str = "cpu"
    definition: str = "trackformers"  # efficiency definition of the headline numbers
    pt_min: float = 0.0  # GeV; needs pT in truth (TrackML)
    grid_search: bool = False  # tune (min_cluster_size, min_samples) on the val split
    grid_min_cluster_size: tuple[int, ...] = DEFAULT_GRID_MIN_CLUSTER_SIZE
    grid_min_samples: tuple[int, ...] = DEFAULT_GRID_MIN_SAMPLES
    output: str | None = None  # JSON file for the metrics
    output_dir: str | None = None  # metrics.json and the PNG figures
    display_event: int = 0  # position in the evaluated set of the event display's event

    def __post_init__(self) -> None:
        # Caught here, not when an empty set reaches the figures or the timing tables.
        if self.max_events is not None and self.max_events < 1:
            raise ValueError(f"--max_events must be at least 1 (got {self.max_events})")


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


def evaluation_events(state: dict[str, Any], config: EvaluationConfig) -> EventSet:
    """The events to evaluate on.

    With the checkpoint's own data file, ``split="auto"`` means its held-out test split
    (rebuilt from the stored seed and fractions); with another file, all of its events.
    A checkpoint that names its own test set (``test_set``, shipped models) is evaluated
    on that set, simulated from its seed into ./data if absent, unless ``data_path`` or
    a train/val/test split (of its training file) is asked for. A missing training file
    that training generated is simulated again the same way (``checkpoint_data``).
    """
    data = state["data"]
    if config.data_path is None and "test_set" in state and config.split in ("auto", "all"):
        simulation = SimulationConfig(**state["test_set"])
        events = load_events(simulated_data(simulation), simulation.track_type, max_nr_hits=None)
        return _first_events(events, config.max_events)
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


def clustering_for(state: dict[str, Any], config: EvaluationConfig) -> ClusteringConfig:
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


def evaluation_config_from(config: object) -> EvaluationConfig:
    """The EvaluationConfig of another tool's config that shares its field names.

    Lets refined_test and domain_decomposition reuse the one loading path with their
    own CLI dataclasses; fields the other config lacks keep their defaults.
    """
    return EvaluationConfig(
        **{
            f.name: getattr(config, f.name)
            for f in fields(EvaluationConfig)
            if hasattr(config, f.name)
        }
    )


def load_setup(config: EvaluationConfig) -> EvaluationSetup:
    """Everything an evaluation script needs, prepared the one way they all share.

    Loads the checkpoint, model (best weights, eval mode), normaliser and events, checks
    that the events support the requested efficiencies (before any model run) and, with
    ``config.grid_search``, tunes the clustering on the validation split
    (``setup.tuning``, ``setup.clustering`` set to the best pair).
    """
    if config.definition not in DEFINITIONS:
        raise ValueError(f"unknown definition {config.definition!r}; use {DEFINITIONS}")
    device = torch.device(config.device)
    state = load_checkpoint(config.model_name, device)
    model, normaliser = model_from_checkpoint(state)
    setup = EvaluationSetup(
        state=state,
        model=model.to(device),
        normaliser=normaliser,
        events=evaluation_events(state, config),
        clustering=clustering_for(state, config),
        device=device,
        data_type=config.data_type or state["data"]["data_type"],
    )
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


def check_truth_supports(events: EventSet, config: EvaluationConfig) -> None:
    """Fail before any model run when the data cannot give the requested efficiencies."""
    columns = set(events.extras)
    wants_kinematics = config.pt_min > 0 or config.definition == "gnn_tracking"
    if wants_kinematics and not {"pt", "eta"} <= columns:
        raise ValueError(
            f"--pt_min / --definition gnn_tracking need particle kinematics (pt, eta) in the "
            f"hit table; these events carry only {sorted(columns) or 'no extra columns'}"
        )
    if config.definition == "gnn_tracking" and not {"volume_id", "layer_id"} <= columns:
        raise ValueError("--definition gnn_tracking needs volume_id and layer_id (TrackML)")


def evaluate_checkpoint(config: EvaluationConfig) -> dict[str, Any]:
    """Run the whole pipeline for one checkpoint; returns the metrics dict.

    Keys: those of ``score_reconstruction`` (score, efficiencies), ``regression``
    (``regression_errors``), ``model_name``, ``data_type``, ``clustering`` (the settings
    used), ``timings_s`` (whole set: model, clustering), ``grid_search`` (with
    ``--grid_search``), ``n_non_finite_hits`` (hits predicted NaN/inf, see
    ``reconstruct``) and ``figures`` (with ``output_dir``).
    """
    setup = load_setup(config)
    result = reconstruct(
        setup.model,
        setup.events,
        setup.normaliser,
        setup.clustering,
        config.batch_size,
        setup.device,
    )
    metrics = score_reconstruction(setup.events, result.labels, config.definition, config.pt_min)
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
    if config.output_dir:
        metrics["figures"] = write_figures(setup, result.params, result.labels, metrics, config)
        write_json(metrics, Path(config.output_dir) / "metrics.json")
    if config.output:
        write_json(metrics, config.output)
    return metrics


def build_arg_parser(
    event_display: bool = True, output_dir_help: str = "write metrics.json and the PNG figures here"
) -> argparse.ArgumentParser:
    """test.py's command line; ``event_display=False`` leaves out ``--display_event``
    (for tools that draw no event display, so the option is refused, not ignored);
    ``output_dir_help`` says what a tool writes into ``--output_dir``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", required=True, help="checkpoint written by training")
    parser.add_argument("--data_path", help="evaluate on this file instead")
    parser.add_argument("--data_type", choices=("linear", "helical", "trackml"))
    parser.add_argument("--split", choices=SPLITS, default="auto")
    parser.add_argument("--max_events", type=int, help="first N (>= 1) events of the split only")
    parser.add_argument("--min_cluster_size", type=int, help="HDBSCAN (default: checkpoint)")
    parser.add_argument("--min_samples", type=int, help="HDBSCAN (default: checkpoint)")
    parser.add_argument("--cluster_implementation", choices=IMPLEMENTATIONS, default="hdbscan")
    parser.add_argument(
        "--noise", choices=NOISE_POLICIES, default="singleton", help="HDBSCAN outliers"
    )
    parser.add_argument("--cluster_jobs", type=int, default=-1, help="-1: all cores")
    parser.add_argument(
        "--one_track_fallback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an event where HDBSCAN finds no cluster is one track (off: as published)",
    )
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--definition", choices=DEFINITIONS, default="trackformers")
    parser.add_argument("--pt_min", type=float, default=0.0, help="GeV (needs TrackML pT)")
    parser.add_argument(
        "--grid_search",
        action="store_true",
        help="tune min_cluster_size/min_samples on the validation split first",
    )
    parser.add_argument(
        "--grid_min_cluster_size", type=int, nargs="+", default=DEFAULT_GRID_MIN_CLUSTER_SIZE
    )
    parser.add_argument("--grid_min_samples", type=int, nargs="+", default=DEFAULT_GRID_MIN_SAMPLES)
    parser.add_argument("--output", help="write the metrics as JSON here")
    parser.add_argument("--output_dir", help=output_dir_help)
    if event_display:
        parser.add_argument("--display_event", type=int, default=0, help="event display: position")
    return parser


def config_from_args(
    argv: list[str] | None,
    parser: argparse.ArgumentParser | None = None,
    config_class: type[EvaluationConfig] = EvaluationConfig,
) -> EvaluationConfig:
    """Parse the command line into ``config_class`` (EvaluationConfig or a subclass).

    A value the config refuses (e.g. ``--max_events 0``) exits with argparse's usage
    message, like any other bad option.
    """
    parser = parser or build_arg_parser()
    args = vars(parser.parse_args(argv))
    for name in ("grid_min_cluster_size", "grid_min_samples"):
        args[name] = tuple(args[name])
    try:
        return config_class(**args)
    except ValueError as error:
        parser.error(str(error))


def format_metrics(metrics: dict[str, Any]) -> str:
    """Human-readable summary; the last line is the TrackML score."""
    clustering = metrics["clustering"]
    lines = [
        f"{metrics['n_events']} events, HDBSCAN min_cluster_size "
        f"{clustering['min_cluster_size']} min_samples {clustering['min_samples']}"
    ]
    regression = metrics.get("regression")
    if regression and regression.get("mse_normalised") is not None:
        lines.append(f"MSE (normalised targets) {regression['mse_normalised']:.5f}")
    definition = metrics.get("definition", "trackformers")
    cut = f", pT >= {metrics['pt_min']} GeV" if metrics.get("pt_min") else ""
    lines.append(
        f"[{definition}{cut}] perfect {metrics['perfect']:.4f}  "
        f"double-majority {metrics['double_majority']:.4f}  LHC {metrics['lhc']:.4f}  "
        f"fake rate {metrics['fake_rate']:.4f}  duplicate rate {metrics['duplicate_rate']:.4f}"
    )
    headline = metrics.get("efficiencies", {}).get("gnn_tracking_pt0.9")
    already_shown = definition == "gnn_tracking" and metrics.get("pt_min") == 0.9
    if headline is not None and not already_shown:
        lines.append(
            f"[gnn_tracking, pT >= 0.9 GeV, {headline['n_particles']} particles] "
            f"perfect {headline['perfect']:.4f}  double-majority "
            f"{headline['double_majority']:.4f}  fake rate {headline['fake_rate']:.4f}"
        )
    lines.append(f"TrackML score: {metrics['trackml_score']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv)
    print("config:", json.dumps(asdict(config), sort_keys=True))
    metrics = evaluate_checkpoint(config)
    if "grid_search" in metrics:
        best = metrics["grid_search"]["best"]
        print(
            f"grid search on the validation split: best min_cluster_size {best[0]}, "
            f"min_samples {best[1]}"
        )
    print(format_metrics(metrics))
    if config.output_dir:
        print(
            f"wrote {Path(config.output_dir) / 'metrics.json'} and "
            f"{len(metrics['figures'])} figures"
        )
    return metrics


if __name__ == "__main__":
    main()
