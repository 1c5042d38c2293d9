"""Refined evaluation: base model + HDBSCAN, then every cluster through the refiner.

Usage:
    python -m refiner.refined_test --model_name runs/base.pt --refiner_name runs/refiner.pt

Pipeline (all through the one inference path, ``evaluation.inference.reconstruct``):
1. The base model and HDBSCAN label the events (as ``evaluation/test.py`` does).
2. Every cluster with at least ``min_hits`` hits becomes an event of its own; all such
   clusters of all events form one derived EventSet, which the refiner predicts in
   batches and HDBSCAN clusters again, cluster by cluster.
3. Split rule: a cluster whose refined parameters form two or more HDBSCAN sub-clusters
   is split into them (each sub-cluster a track; its sub-level outliers become singleton
   tracks); a cluster with fewer than two sub-clusters stays whole. The re-clustering
   may return the whole cluster as one (``allow_single_cluster``): without that HDBSCAN
   must pick the root's children, and it split about a quarter of pure 16-20-hit
   clusters, single Gaussian blobs of any width, in two. A cluster smaller than
   ``2 * min_cluster_size`` can never hold two sub-clusters and is not refined.
4. Both assignments are scored on the same events: TrackML score and efficiencies side
   by side.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import EventSet, Normaliser
from data_processing.derived_data import pair_codes, regroup_events
from data_processing.errors import UserError, run_cli
from evaluation.clustering import ClusteringConfig
from evaluation.inference import reconstruct, score_reconstruction
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


@dataclass(frozen=True)
class RefineConfig:
    """HDBSCAN settings for the refined parameters of one cluster, and which to refine.

    min_hits: clusters with fewer hits are kept as they are; None = 2 * min_cluster_size
        (the fewest hits that can form two sub-clusters).
    n_jobs: clustering processes (-1 = all cores).
    batch_size: clusters per refiner forward pass.
    single_cluster: HDBSCAN may return a refined cluster whole (``allow_single_cluster``).
    """

    min_cluster_size: int = 4
    min_samples: int = 2
    min_hits: int | None = None
    n_jobs: int = 1
    batch_size: int = 256
    single_cluster: bool = True

    @property
    def threshold(self) -> int:
        return self.min_hits if self.min_hits is not None else 2 * self.min_cluster_size

    def clustering(self) -> ClusteringConfig:
        # "unassigned": sub-level outliers stay -1 so the split rule can see them.
        # allow_single_cluster: a pure cluster refines to one blob and must stay one.
        return ClusteringConfig(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            noise="unassigned",
            n_jobs=self.n_jobs,
            allow_single_cluster=self.single_cluster,
        )


@dataclass
class ClusterSet:
    """Clusters of an EventSet as events of a derived set (T' hits, C clusters)."""

    events: EventSet  # event c = cluster c; extras source_event_id, source_row
    rows: np.ndarray  # [T'] row of each hit in the source set


def clusters_as_events(events: EventSet, labels: np.ndarray, min_hits: int) -> ClusterSet:
    """Every cluster (label >= 0) with at least ``min_hits`` hits, as an event.

    Args:
        events: the events the labels belong to.
        labels: [T] track labels, unique within each event (-1 = unassigned).
        min_hits: smallest cluster to include.

    Returns:
        A ``ClusterSet``; clusters ordered by source event, then label; hits within a
        cluster in source order. Vectorised: one sort, one gather.
    """
    labels = np.asarray(labels, dtype=np.int64)
    assigned = np.flatnonzero(labels >= 0)
    code, n_clusters = pair_codes(events.hit_event_index()[assigned], labels[assigned])
    big = np.bincount(code, minlength=n_clusters)[code] >= min_hits
    rows, code = assigned[big], code[big]
    order = np.argsort(code, kind="stable")
    rows = rows[order]
    _, sizes = np.unique(code[order], return_counts=True)
    return ClusterSet(regroup_events(events, rows, sizes), rows)


def split_clusters(
    labels: np.ndarray, events: EventSet, clusters: ClusterSet, sub_labels: np.ndarray
) -> tuple[np.ndarray, int]:
    """Apply the split rule (module docstring) to the base labels.

    Args:
        labels: [T] base labels of ``events``.
        events: the events.
        clusters: the refined clusters (from ``clusters_as_events``).
        sub_labels: [T'] HDBSCAN labels of the refined parameters of ``clusters``,
            unique within each cluster, -1 for outliers.

    Returns:
        ([T] new labels, unique within each event, -1 where the base had -1;
        number of clusters split).
    """
    labels = np.asarray(labels, dtype=np.int64)
    sub_labels = np.asarray(sub_labels, dtype=np.int64)
    cluster = clusters.events.hit_event_index()
    found = sub_labels >= 0
    pair, n_pairs = pair_codes(cluster[found], sub_labels[found])
    cluster_of_pair = np.zeros(n_pairs, dtype=np.int64)
    cluster_of_pair[pair] = cluster[found]
    n_sub = np.bincount(cluster_of_pair, minlength=clusters.events.n_events)
    split = n_sub[cluster] >= 2
    # piece: 0 keeps the base track; k + 1 is sub-cluster k; a negative id is a singleton.
    piece = np.zeros(events.n_hits, dtype=np.int64)
    piece[clusters.rows[split & found]] = sub_labels[split & found] + 1
    outliers = clusters.rows[split & ~found]
    piece[outliers] = -1 - np.arange(len(outliers))
    track, _ = pair_codes(events.hit_event_index(), labels)
    new, _ = pair_codes(track, piece)
    return np.where(labels < 0, -1, new), int((n_sub >= 2).sum())


@dataclass
class RefineResult:
    labels: np.ndarray  # [T] refined labels
    n_refined: int  # clusters passed through the refiner
    n_split: int  # of which split
    timings: dict[str, float] = field(default_factory=dict)


def refine(
    refiner: TransformerRegressor,
    normaliser: Normaliser,
    events: EventSet,
    labels: np.ndarray,
    config: RefineConfig,
    device: torch.device | str = "cpu",
) -> RefineResult:
    """Pass every big enough cluster through the refiner and split impure ones.

    ``normaliser`` is the refiner's own (from its checkpoint). Returns the refined labels
    [T] of ``events`` and counts; the refiner's prediction and clustering times are in
    ``timings`` (seconds, whole set).
    """
    clusters = clusters_as_events(events, labels, config.threshold)
    if clusters.events.n_events == 0:
        return RefineResult(np.asarray(labels, dtype=np.int64).copy(), 0, 0)
    result = reconstruct(
        refiner, clusters.events, normaliser, config.clustering(), config.batch_size, device
    )
    new_labels, n_split = split_clusters(labels, events, clusters, result.labels)
    timings = {f"refiner_{name}": value for name, value in result.timings.items()}
    return RefineResult(new_labels, clusters.events.n_events, n_split, timings)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


@dataclass
class RefinedTestConfig(EvaluationOptions):
    """One refined evaluation: the shared evaluation options (base model and its
    clustering) plus the refiner and its re-clustering; None means "as stored"."""

    refiner_name: str = option("runs/refiner.pt", "refiner checkpoint (training_refiner)")
    refine_min_cluster_size: int | None = option(
        None, "HDBSCAN min_cluster_size of the re-clustering (default: the base's)"
    )
    refine_min_samples: int | None = option(
        None, "HDBSCAN min_samples of the re-clustering (default: the base's)"
    )
    refine_min_hits: int | None = option(
        None, "smallest cluster refined (default: 2 x the re-clustering's min_cluster_size)"
    )
    refine_single_cluster: bool = option(
        True, "the re-clustering may keep a cluster whole (HDBSCAN allow_single_cluster)"
    )


def evaluate_refined(
    config: RefinedTestConfig, report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Score base and refined assignments of the same events; returns both metric dicts.

    ``report`` sees the results before ``config.output`` is written (checked first).
    """
    if config.output:
        check_writable_file(config.output, "--output")
    setup = load_setup(config)
    model, normaliser, events = setup.model, setup.normaliser, setup.events
    clustering, device = setup.clustering, setup.device
    refiner_state = load_checkpoint(config.refiner_name, device)
    if refiner_state["data"]["data_type"] != setup.data_type:
        raise UserError(
            f"{config.refiner_name}: refiner trained on {refiner_state['data']['data_type']} "
            f"data, but the events are {setup.data_type}"
        )
    refiner, refiner_normaliser = model_from_checkpoint(refiner_state)
    refine_config = RefineConfig(
        min_cluster_size=config.refine_min_cluster_size or clustering.min_cluster_size,
        min_samples=config.refine_min_samples or clustering.min_samples,
        min_hits=config.refine_min_hits,
        single_cluster=config.refine_single_cluster,
        n_jobs=config.cluster_jobs,
        batch_size=config.batch_size,
    )
    base = reconstruct(model, events, normaliser, clustering, config.batch_size, device)
    start = time.perf_counter()
    refined = refine(refiner, refiner_normaliser, events, base.labels, refine_config, device)
    refine_s = time.perf_counter() - start
    results = {
        "model_name": config.model_name,
        "refiner_name": config.refiner_name,
        "clustering": asdict(clustering),
        "refine": asdict(refine_config),
        "base": {**score_reconstruction(events, base.labels), "timings_s": base.timings},
        "refined": {
            **score_reconstruction(events, refined.labels),
            "timings_s": {**refined.timings, "refine_total_s": refine_s},
        },
        "clusters_refined": refined.n_refined,
        "clusters_split": refined.n_split,
    }
    return report_and_write(results, config.output, report)


def format_results(results: dict[str, Any]) -> str:
    """Base and refined metrics side by side; the last line is both TrackML scores."""
    base, refined = results["base"], results["refined"]
    lines = [
        f"{base['n_events']} events; {results['clusters_refined']} clusters refined, "
        f"{results['clusters_split']} split",
        f"{'':>16} {'base':>8} {'refined':>8}",
    ]
    for key, name in (
        ("perfect", "perfect"),
        ("double_majority", "double-majority"),
        ("lhc", "LHC"),
        ("fake_rate", "fake rate"),
    ):
        lines.append(f"{name:>16} {base[key]:>8.4f} {refined[key]:>8.4f}")
    lines.append(
        f"{'TrackML score:':>16} {base['trackml_score']:>8.4f} {refined['trackml_score']:>8.4f}"
    )
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0], prog="python -m refiner.refined_test")
    return add_dataclass_arguments(parser, RefinedTestConfig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_namespace(RefinedTestConfig, build_arg_parser().parse_args(argv))
    announce_config(config)
    results = evaluate_refined(config, report=lambda r: print(format_results(r), flush=True))
    return results


if __name__ == "__main__":
    run_cli(main)
