"""Domain decomposition, the evaluation side: run a model on region events, merge, score.

The regions, the split into region events, the label merge and region data files are
data-layer geometry (``data_processing.domain_decomposition``, which documents the merge
rule); this module runs the one inference path on the region events
(``reconstruct_by_regions``) and holds the command line that scores a checkpoint on
whole and decomposed events, or writes region events for training a region model.

Usage:
    python -m evaluation.decomposition --model_name runs/base.pt \
        --theta_edges 0 1.5708 3.1416 --phi_regions 2 4 8 --overlap 0.1
    # region events of the base model's train + val events, to train a region model:
    python -m evaluation.decomposition --model_name runs/base.pt \
        --phi_regions 4 --overlap 0.1 --write_regions data/regions.csv
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from checkpoint import load_checkpoint
from data_processing.batching import DeviceEvents
from data_processing.data_types import DATA_TYPES
from data_processing.dataset import EventSet, Normaliser
from data_processing.derived_data import EventSelection
from data_processing.domain_decomposition import (
    MERGE_MODES,
    REGION_COLUMN,
    DecompositionConfig,
    RegionSplit,
    decomposition_report,
    merge_region_labels,
    split_into_regions,
    write_region_file,
)
from evaluation.checkpoint_data import training_data_path
from evaluation.clustering import ClusteringConfig, cluster_events
from evaluation.inference import predict_track_params, reconstruct, score_reconstruction
from evaluation.options import EvaluationOptions
from evaluation.pipeline import load_setup, write_json
from model import TransformerRegressor


@dataclass
class DecompositionResult:
    """Merged labels [T] of the undivided events, the split and its report."""

    labels: np.ndarray
    split: RegionSplit
    report: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def reconstruct_by_regions(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    clustering: ClusteringConfig,
    config: DecompositionConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> DecompositionResult:
    """Split, run the model on all region events at once, merge back (``config.merge``).

    Returns the merged labels [T] of ``events``, the split, its report and timings
    (seconds: split, model, clustering, merge).
    """
    start = time.perf_counter()
    split = split_into_regions(events, config)
    timings = {"split_s": time.perf_counter() - start}
    if config.merge == "labels":
        result = reconstruct(model, split.events, normaliser, clustering, batch_size, device)
        start = time.perf_counter()
        labels = merge_region_labels(split, result.labels)
        timings.update({**result.timings, "merge_s": time.perf_counter() - start})
    else:
        start = time.perf_counter()
        data = DeviceEvents.from_events(split.events, normaliser, device)
        params = predict_track_params(model.to(device), data, batch_size).cpu().numpy()
        timings["model_s"] = time.perf_counter() - start
        is_home = split.events.extras[REGION_COLUMN] == split.home_region[split.source_row]
        merged = np.empty((events.n_hits, params.shape[1]), dtype=params.dtype)
        merged[split.source_row[is_home]] = params[is_home]
        start = time.perf_counter()
        labels = cluster_events(merged, events.offsets, clustering)
        timings["clustering_s"] = time.perf_counter() - start
    return DecompositionResult(labels, split, decomposition_report(events, split), timings)


@dataclass
class DecompositionEvalConfig(EvaluationOptions):
    """One CLI run: a checkpoint, its events and one decomposition per phi_regions value."""

    model_name: str = "runs/transformer_regressor.pt"
    theta_edges: tuple[float, ...] = (0.0, math.pi)
    phi_regions: tuple[int, ...] = (4,)
    phi_start: float = -math.pi
    overlap: float = 0.05
    min_shared_hits: int = 2
    merge: tuple[str, ...] = ("labels",)
    write_regions: str | None = None  # write region events for training instead

    def decompositions(self) -> list[DecompositionConfig]:
        """One decomposition per (``phi_regions``, ``merge``) value."""
        return [
            DecompositionConfig.regular(
                self.theta_edges, n, self.phi_start, self.overlap, self.min_shared_hits, merge
            )
            for n in self.phi_regions
            for merge in self.merge
        ]


def write_regions_for_training(config: DecompositionEvalConfig) -> dict[str, Any]:
    """``--write_regions``: region events of a data file, for training a region model.

    Source: ``--data_path`` (all its events; needs ``--data_type``), else the data file of
    ``--model_name`` restricted to that model's train + validation events, so that a
    region model trained on the file never sees the base model's test events.
    """
    if len(config.phi_regions) != 1:
        raise ValueError("--write_regions takes a single --phi_regions value")
    # The region events are the same for every merge mode.
    if config.data_path is not None:
        if config.data_type is None:
            raise ValueError("--write_regions with --data_path needs --data_type")
        path, data_type, selection = config.data_path, config.data_type, None
    else:
        state = load_checkpoint(config.model_name)
        data = state["data"]
        # A fresh clone lacks a generated training file: simulated again if need be.
        path, data_type = training_data_path(state, config.model_name), data["data_type"]
        fractions = tuple(data["split_fractions"])
        selection = EventSelection(("train", "val"), fractions, data["split_seed"])
    decomposition = config.decompositions()[0]
    return write_region_file(path, data_type, config.write_regions, decomposition, selection)


def evaluate_decomposition(config: DecompositionEvalConfig) -> dict[str, Any]:
    """Score the undivided events and every requested decomposition of the same events."""
    setup = load_setup(config)
    model, normaliser, events = setup.model, setup.normaliser, setup.events
    clustering, device = setup.clustering, setup.device
    undivided = reconstruct(model, events, normaliser, clustering, config.batch_size, device)
    results: dict[str, Any] = {
        "model_name": config.model_name,
        "clustering": asdict(clustering),
        "undivided": {
            **score_reconstruction(events, undivided.labels),
            "timings_s": undivided.timings,
        },
        "splits": [],
    }
    for decomposition in config.decompositions():
        merged = reconstruct_by_regions(
            model, events, normaliser, clustering, decomposition, config.batch_size, device
        )
        results["splits"].append(
            {
                **merged.report,
                **score_reconstruction(events, merged.labels),
                "timings_s": merged.timings,
            }
        )
    if config.output:
        write_json(results, config.output)
    return results


def format_results(results: dict[str, Any]) -> str:
    """One line per split next to the undivided events; the score is the last column."""
    undivided = results["undivided"]
    lines = [
        f"{undivided['n_events']} events",
        f"{'split':>21} {'regions':>7} {'hits/region-ev':>14} {'dup.share':>9} "
        f"{'split-part.':>11} {'perfect':>7} {'DM':>6} {'LHC':>6} {'score':>6}",
        f"{'undivided':>21} {1:>7} {'-':>14} {'-':>9} {'-':>11} {undivided['perfect']:>7.4f} "
        f"{undivided['double_majority']:>6.4f} {undivided['lhc']:>6.4f} "
        f"{undivided['trackml_score']:>6.4f}",
    ]
    for split in results["splits"]:
        name = (
            f"{len(split['theta_edges']) - 1}x{len(split['phi_edges'])} "
            f"ov{split['overlap']:g} {split['merge']}"
        )
        lines.append(
            f"{name:>21} {split['n_regions']:>7} {split['mean_hits_per_region_event']:>14.1f} "
            f"{split['duplicate_share']:>9.4f} {split['particles_split_share']:>11.4f} "
            f"{split['perfect']:>7.4f} {split['double_majority']:>6.4f} {split['lhc']:>6.4f} "
            f"{split['trackml_score']:>6.4f}"
        )
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.decomposition",
        description="Score a checkpoint on whole events and on (theta, phi)-decomposed events.",
    )
    parser.add_argument(
        "--model_name",
        default=DecompositionEvalConfig.model_name,
        help="checkpoint written by training (default: %(default)s)",
    )
    parser.add_argument("--data_path", help="evaluate on this file instead of the test split")
    parser.add_argument("--data_type", choices=DATA_TYPES)
    parser.add_argument("--split", choices=("auto", "train", "val", "test", "all"), default="auto")
    parser.add_argument("--max_events", type=int)
    parser.add_argument(
        "--theta_edges",
        type=float,
        nargs="+",
        default=[0.0, math.pi],
        help="polar-angle band edges, rad, covering [0, pi] (default: one band)",
    )
    parser.add_argument(
        "--phi_regions",
        type=int,
        nargs="+",
        default=[4],
        help="equal azimuth sectors; several values = several splits compared",
    )
    parser.add_argument("--phi_start", type=float, default=-math.pi, help="first sector start")
    parser.add_argument("--overlap", type=float, default=0.05, help="margin per side, rad")
    parser.add_argument("--min_shared_hits", type=int, default=2)
    parser.add_argument(
        "--merge",
        nargs="+",
        choices=MERGE_MODES,
        default=["labels"],
        help="labels: cluster per region and merge labels; params: merge predictions "
        "and cluster whole events (several = compare)",
    )
    parser.add_argument("--min_cluster_size", type=int)
    parser.add_argument("--min_samples", type=int)
    parser.add_argument("--cluster_jobs", type=int, default=-1, help="-1: all cores")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument(
        "--write_regions",
        metavar="OUT",
        help="instead of scoring, write the region events (of --data_path, or of the "
        "model's train+val events) to OUT as a training data file",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = vars(build_arg_parser().parse_args(argv))
    args["theta_edges"] = tuple(args["theta_edges"])
    args["phi_regions"] = tuple(args["phi_regions"])
    args["merge"] = tuple(args["merge"])
    config = DecompositionEvalConfig(**args)
    print("config:", json.dumps(asdict(config), sort_keys=True))
    if config.write_regions:
        report = write_regions_for_training(config)
        print("wrote region events:", json.dumps(report))
        return report
    results = evaluate_decomposition(config)
    print(format_results(results))
    return results


if __name__ == "__main__":
    main()
