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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from checkpoint import load_checkpoint
from data_processing.batching import DeviceEvents
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
from data_processing.errors import UserError, run_cli
from evaluation.checkpoint_data import training_data_path
from evaluation.clustering import ClusteringConfig, cluster_events
from evaluation.inference import predict_track_params, reconstruct, score_reconstruction
from evaluation.options import (
    EvaluationOptions,
    add_dataclass_arguments,
    announce_config,
    check_writable_file,
    config_from_namespace,
    new_parser,
    option,
)
from evaluation.pipeline import load_setup, report_and_write
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


def parse_regions(text: str) -> tuple[int, int, str]:
    """``"4x8"`` -> (4 theta bands, 8 phi sectors, "labels"); a trailing ``p`` ("4x8p")
    merges the predicted parameters instead and clusters whole events ("params");
    ``"1x1"`` is the whole event. Raises UserError for anything else."""
    merge = "params" if text.lower().endswith("p") else "labels"
    try:
        bands, sectors = (int(v) for v in text.lower().rstrip("p").split("x"))
    except ValueError as err:
        raise UserError(f"--regions: {text!r} is not TxP[p], e.g. 4x8 or 4x8p") from err
    if bands < 1 or sectors < 1:
        raise UserError(f"--regions: {text!r} needs at least one band and one sector")
    return bands, sectors, merge


def reconstruct_in_regions(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    clustering: ClusteringConfig,
    regions: tuple[int, int, str],
    overlap: float = 0.05,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, dict[str, float]]:
    """Labels [T] of ``events`` (-1: unassigned) and seconds (model_s including the
    split, clustering_s including the merge) for ``regions`` from ``parse_regions``:
    (1, 1, ...) runs whole events one at a time, anything else equal theta bands x phi
    sectors with ``overlap`` rad margins."""
    bands, sectors, merge = regions
    if (bands, sectors) == (1, 1):
        result = reconstruct(model, events, normaliser, clustering, 1, device)
        return result.labels, dict(result.timings)
    theta_edges = tuple(float(v) for v in np.linspace(0.0, math.pi, bands + 1))
    decomposition = DecompositionConfig.regular(theta_edges, sectors, overlap=overlap, merge=merge)
    # Region events are small: with the label merge a region may hold a single track.
    region_clustering = replace(clustering, allow_single_cluster=merge == "labels")
    result = reconstruct_by_regions(
        model, events, normaliser, region_clustering, decomposition, 64, device
    )
    timings = result.timings
    return result.labels, {
        "model_s": timings.get("model_s", 0.0) + timings.get("split_s", 0.0),
        "clustering_s": timings.get("clustering_s", 0.0) + timings.get("merge_s", 0.0),
    }


@dataclass
class DecompositionEvalConfig(EvaluationOptions):
    """One CLI run: a checkpoint, its events and one decomposition per phi_regions value."""

    model_name: str = option("runs/transformer_regressor.pt", "checkpoint written by training")
    theta_edges: tuple[float, ...] = option(
        (0.0, math.pi), "polar-angle band edges, rad, covering [0, pi] (one band: 0 pi)"
    )
    phi_regions: tuple[int, ...] = option(
        (4,), "equal azimuth sectors; several values = several splits compared"
    )
    phi_start: float = option(-math.pi, "start of the first azimuth sector, rad")
    overlap: float = option(0.05, "margin added to each side of a region, rad")
    min_shared_hits: int = option(2, "overlap hits two tracks must share to be joined")
    merge: tuple[str, ...] = option(
        ("labels",),
        "labels: cluster per region and merge labels; params: merge predictions and "
        "cluster whole events (several = compare)",
        choices=MERGE_MODES,
    )
    write_regions: str | None = option(
        None,
        "instead of scoring, write the region events (of --data_path, or of the model's "
        "train+val events) to this file as a training data file",
        metavar="OUT",
    )

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
        raise UserError("--write_regions takes a single --phi_regions value")
    # The region events are the same for every merge mode.
    if config.data_path is not None:
        if config.data_type is None:
            raise UserError("--write_regions with --data_path needs --data_type")
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


def evaluate_decomposition(
    config: DecompositionEvalConfig, report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Score the undivided events and every requested decomposition of the same events.

    ``report`` sees the results before ``config.output`` is written.
    """
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
    return report_and_write(results, config.output, report)


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
    parser = new_parser(
        "Score a checkpoint on whole events and on (theta, phi)-decomposed events.",
        prog="python -m evaluation.decomposition",
    )
    return add_dataclass_arguments(parser, DecompositionEvalConfig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_namespace(DecompositionEvalConfig, build_arg_parser().parse_args(argv))
    announce_config(config)
    if config.output:
        check_writable_file(config.output, "--output")
    if config.write_regions:
        check_writable_file(config.write_regions, "--write_regions")
        report = write_regions_for_training(config)
        print("wrote region events:", json.dumps(report))
        return report
    results = evaluate_decomposition(config, report=lambda r: print(format_results(r), flush=True))
    return results


if __name__ == "__main__":
    run_cli(main)
