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

This file is the command line; the run itself is ``evaluation.pipeline`` (imported only
once the options are parsed, so ``--help`` answers without loading torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from data_processing.errors import run_cli
from evaluation.options import (
    EvaluationConfig,
    add_dataclass_arguments,
    announce_config,
    config_from_namespace,
    new_parser,
)

__all__ = ["EvaluationConfig", "build_arg_parser", "config_from_args", "format_metrics", "main"]


def build_arg_parser(
    config_class: type[EvaluationConfig] = EvaluationConfig,
    exclude: tuple[str, ...] = (),
    description: str | None = None,
) -> argparse.ArgumentParser:
    """The command line of ``config_class`` (EvaluationConfig or a subclass): one option
    per field. ``exclude`` leaves options out (a tool that draws no event display refuses
    ``--display_event`` rather than ignoring it)."""
    parser = new_parser(description or __doc__.splitlines()[0])
    return add_dataclass_arguments(parser, config_class, exclude)


def config_from_args(
    argv: list[str] | None,
    parser: argparse.ArgumentParser | None = None,
    config_class: type[EvaluationConfig] = EvaluationConfig,
) -> EvaluationConfig:
    """Parse the command line into ``config_class``; a refused value (``--max_events 0``)
    is a user error (one line, exit 2)."""
    parser = parser or build_arg_parser(config_class)
    return config_from_namespace(config_class, parser.parse_args(argv))


def format_grid(tuning: dict[str, Any]) -> str:
    """The grid search's table (one line per pair, in grid order) and its best pair."""
    lines = [
        f"grid search on the validation split ({tuning['n_events']} events; "
        "min_cluster_size min_samples: TrackML score):"
    ]
    lines += [
        f"  {row['min_cluster_size']:>3} {row['min_samples']:>3}: {row['trackml_score']:.4f}"
        for row in tuning["table"]
    ]
    best = tuning["best"]
    lines.append(
        f"grid search on the validation split: best min_cluster_size {best[0]}, "
        f"min_samples {best[1]}"
    )
    return "\n".join(lines)


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


def print_report(metrics: dict[str, Any]) -> None:
    """The grid search (if any) and the metrics, printed before any file is written."""
    if "grid_search" in metrics:
        print(format_grid(metrics["grid_search"]))
    print(format_metrics(metrics), flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv)
    announce_config(config)
    from evaluation.pipeline import evaluate_checkpoint  # torch: after the options

    metrics = evaluate_checkpoint(config, report=print_report)
    if config.output_dir:
        print(
            f"wrote {Path(config.output_dir) / 'metrics.json'} and "
            f"{len(metrics['figures'])} figures"
        )
    return metrics


if __name__ == "__main__":
    run_cli(main)
