"""Evaluate a trained checkpoint: predict, cluster with HDBSCAN, print the TrackML score.

Usage:
    python evaluation/test.py --model_name runs/transformer_regressor.pt
    python evaluation/test.py --model_name m.pt --data_path other.csv --split all

Everything about the model and its data (architecture, normalisation, data file, split
seed, clustering settings) is read from the checkpoint; options here only override.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import EventSet, load_events, split_events
from evaluation.clustering import ClusteringConfig
from evaluation.inference import reconstruct, score_reconstruction

SPLITS = ("auto", "train", "val", "test", "all")


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run; None means "as stored in the checkpoint"."""

    model_name: str
    data_path: str | None = None
    data_type: str | None = None
    split: str = "auto"
    max_events: int | None = None
    min_cluster_size: int | None = None
    min_samples: int | None = None
    cluster_jobs: int = -1
    batch_size: int = 256
    device: str = "cpu"
    output: str | None = None  # JSON file for the metrics


def evaluation_events(state: dict[str, Any], config: EvaluationConfig) -> EventSet:
    """The events to evaluate on.

    With the checkpoint's own data file, ``split="auto"`` means its held-out test split
    (rebuilt from the stored seed and fractions); with another file, all of its events.
    """
    data = state["data"]
    path = config.data_path or data["path"]
    data_type = config.data_type or data["data_type"]
    events = load_events(path, data_type, max_nr_hits=None)
    split = config.split
    if split == "auto":
        split = "test" if Path(path).resolve() == Path(data["path"]).resolve() else "all"
    if split != "all":
        parts = split_events(events.n_events, tuple(data["split_fractions"]), data["split_seed"])
        events = events.subset(parts[("train", "val", "test").index(split)])
    if config.max_events is not None:
        events = events.subset(torch.arange(min(config.max_events, events.n_events)).numpy())
    return events


def clustering_for(state: dict[str, Any], config: EvaluationConfig) -> ClusteringConfig:
    stored = state.get("clustering", {})
    return ClusteringConfig(
        min_cluster_size=config.min_cluster_size or stored.get("min_cluster_size", 5),
        min_samples=config.min_samples or stored.get("min_samples", 2),
        n_jobs=config.cluster_jobs,
    )


def evaluate_checkpoint(config: EvaluationConfig) -> dict[str, Any]:
    """Run the whole pipeline for one checkpoint; returns the metrics dict."""
    device = torch.device(config.device)
    state = load_checkpoint(config.model_name, device)
    model, normaliser = model_from_checkpoint(state)
    events = evaluation_events(state, config)
    clustering = clustering_for(state, config)
    result = reconstruct(model, events, normaliser, clustering, config.batch_size, device)
    metrics = score_reconstruction(events, result.labels)
    metrics.update(
        {
            "model_name": str(config.model_name),
            "clustering": asdict(clustering),
            "timings_s": result.timings,
        }
    )
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", required=True, help="checkpoint written by training")
    parser.add_argument("--data_path", help="evaluate on this file instead")
    parser.add_argument("--data_type", choices=("linear", "helical", "trackml"))
    parser.add_argument("--split", choices=SPLITS, default="auto")
    parser.add_argument("--max_events", type=int)
    parser.add_argument("--min_cluster_size", type=int)
    parser.add_argument("--min_samples", type=int)
    parser.add_argument("--cluster_jobs", type=int, default=-1, help="-1: all cores")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="write the metrics as JSON here")
    return parser


def format_metrics(metrics: dict[str, Any]) -> str:
    """Human-readable summary; the last line is the TrackML score."""
    clustering = metrics["clustering"]
    return (
        f"{metrics['n_events']} events, HDBSCAN min_cluster_size "
        f"{clustering['min_cluster_size']} min_samples {clustering['min_samples']}\n"
        f"perfect {metrics['perfect']:.4f}  double-majority {metrics['double_majority']:.4f}  "
        f"LHC {metrics['lhc']:.4f}  fake rate {metrics['fake_rate']:.4f}\n"
        f"TrackML score: {metrics['trackml_score']:.4f}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = EvaluationConfig(**vars(build_arg_parser().parse_args(argv)))
    print("config:", json.dumps(asdict(config), sort_keys=True))
    metrics = evaluate_checkpoint(config)
    print(format_metrics(metrics))
    return metrics


if __name__ == "__main__":
    main()
