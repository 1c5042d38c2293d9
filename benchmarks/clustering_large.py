"""Benchmark: clustering large TrackML events (SPEC 8: HDBSCAN on 100k hits ~1.7 s).

The same per-hit parameters of each event are clustered by every candidate, the labels
are scored (TrackML score) and timed (wall clock, one event at a time):

- ``hdbscan``: the hdbscan package (the project's default), one core;
- ``sklearn``: scikit-learn's HDBSCAN, one core;
- ``fast_hdbscan``: the fast-hdbscan package (numba, multicore: all cores), where it
  imports (``--extra_path`` adds a folder holding it to ``sys.path``); its numba
  compilation is done on a small warm-up input first and not timed;
- ``regions<S>``: the hdbscan package per phi sector: the hits are split into S sectors
  of their predicted azimuth (atan2 of the sin phi / cos phi parameters), each sector is
  clustered on its own in a pool of ``--jobs`` processes (started before timing), the
  labels are merged; a track cut by a sector edge loses the smaller part.

Parameters: ``--model`` uses a checkpoint's predictions (normalised, as the pipeline
clusters them); without it, the true normalised targets plus Gaussian noise of standard
deviation ``--sigma`` (seeded): the same input for every candidate either way. Events:
hit-table files (``python -m data_processing.trackml_data``), all events of each.

Writes ``benchmarks/results_clustering_large.md``. Run from the repository root::

    python -m benchmarks.clustering_large --data data/tml/large_2000-5000.parquet \
        data/tml/large_full.parquet --sigma 0.02 --extra_path /tmp/fastpkgs
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.dataset import EventSet, Normaliser, load_events
from data_processing.errors import run_cli
from evaluation.clustering import ClusteringConfig, cluster_event, submission_frame
from evaluation.scoring import score_per_event

RESULTS = Path(__file__).resolve().parent / "results_clustering_large.md"


@dataclass(frozen=True)
class BenchConfig:
    """Inputs of one run (see the module docstring)."""

    data: tuple[str, ...]
    model: str | None
    sigma: float
    seed: int
    min_cluster_size: int
    min_samples: int
    regions: tuple[int, ...]
    jobs: int
    candidates: tuple[str, ...]
    max_events: int
    out: str


def event_parameters(events: EventSet, config: BenchConfig) -> tuple[np.ndarray, Normaliser | None]:
    """Per-hit parameters [T, K] to cluster: a model's predictions or noisy truth."""
    if config.model:
        import torch

        from checkpoint import load_checkpoint, model_from_checkpoint
        from evaluation.inference import predict_events

        torch.set_num_threads(1)
        model, normaliser = model_from_checkpoint(load_checkpoint(config.model))
        params, _ = predict_events(model, events, normaliser, batch_size=1)
        return params, normaliser
    normaliser = Normaliser.fit(events)
    truth = normaliser.normalise_targets(events.targets)
    rng = np.random.default_rng(config.seed)
    return truth + rng.normal(0.0, config.sigma, truth.shape).astype(np.float32), normaliser


def fast_hdbscan_labels(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """fast_hdbscan labels [n] with the project's semantics (outliers singletons)."""
    import fast_hdbscan

    labels = fast_hdbscan.HDBSCAN(
        min_cluster_size=config.min_cluster_size, min_samples=config.min_samples
    ).fit_predict(np.ascontiguousarray(params, dtype=np.float64))
    labels = labels.astype(np.int64)
    outlier = labels < 0
    labels[outlier] = labels.max(initial=-1) + 1 + np.arange(int(outlier.sum()))
    return labels


def sector_of(params: np.ndarray, n_sectors: int) -> np.ndarray:
    """Sector [n] (0..S-1) of each hit's predicted azimuth (columns 1, 2: sin, cos phi)."""
    phi = np.arctan2(params[:, 1], params[:, 2])  # normalised, but the signs are kept
    return np.minimum(((phi + np.pi) / (2 * np.pi) * n_sectors).astype(np.int64), n_sectors - 1)


def _cluster_part(params: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    return cluster_event(params, config)


def region_labels(
    params: np.ndarray, n_sectors: int, config: ClusteringConfig, pool: ProcessPoolExecutor
) -> np.ndarray:
    """Labels [n]: every phi sector clustered in the pool, label ranges made disjoint."""
    sector = sector_of(params, n_sectors)
    parts = [np.flatnonzero(sector == s) for s in range(n_sectors)]
    results = pool.map(_cluster_part, [params[p] for p in parts], [config] * n_sectors)
    labels = np.empty(len(params), dtype=np.int64)
    next_label = 0
    for rows, part in zip(parts, results, strict=True):
        labels[rows] = part + next_label
        next_label += int(part.max(initial=-1)) + 1
    return labels


def score(events: EventSet, labels: np.ndarray) -> np.ndarray:
    """TrackML score [E] of every event."""
    submission = submission_frame(events.hit_event_ids(), events.hit_id, labels)
    return score_per_event(events.truth_frame(), submission).to_numpy()


def run(config: BenchConfig) -> pd.DataFrame:
    """One row per (file, event, candidate): hits, seconds, TrackML score."""
    clustering = ClusteringConfig(config.min_cluster_size, config.min_samples)
    candidates = list(config.candidates)
    if "fast_hdbscan" in candidates:
        try:
            fast_hdbscan_labels(np.random.default_rng(0).normal(size=(500, 4)), clustering)
        except ImportError:
            print("fast_hdbscan does not import: left out")
            candidates.remove("fast_hdbscan")
    rows = []
    with ProcessPoolExecutor(max_workers=config.jobs) as pool:
        list(pool.map(_cluster_part, [np.zeros((1, 4))] * config.jobs, [clustering] * config.jobs))
        for path in config.data:
            events = load_events(path, "trackml", max_nr_hits=None)
            params, _ = event_parameters(events, config)
            for i in range(min(events.n_events, config.max_events)):
                a, b = events.offsets[i], events.offsets[i + 1]
                one = events.subset(np.array([i]))
                for name in candidates + [f"regions{s}" for s in config.regions]:
                    start = time.perf_counter()
                    if name == "fast_hdbscan":
                        labels = fast_hdbscan_labels(params[a:b], clustering)
                    elif name.startswith("regions"):
                        labels = region_labels(params[a:b], int(name[7:]), clustering, pool)
                    else:
                        labels = cluster_event(
                            params[a:b], replace(clustering, implementation=name)
                        )
                    seconds = time.perf_counter() - start
                    rows.append(
                        {
                            "file": Path(path).name,
                            "event": int(events.event_id[i]),
                            "hits": int(b - a),
                            "candidate": name,
                            "seconds": seconds,
                            "score": float(score(one, labels)[0]),
                        }
                    )
                    print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, config: BenchConfig, command: str) -> str:
    """The results table: per file and candidate, mean hits, seconds and score."""
    table = (
        frame.groupby(["file", "candidate"], sort=False)
        .agg(
            events=("event", "size"),
            hits=("hits", "mean"),
            seconds=("seconds", "mean"),
            score=("score", "mean"),
        )
        .reset_index()
    )
    base = table[table.candidate == "hdbscan"].set_index("file")
    source = (
        f"predictions of {config.model}"
        if config.model
        else f"true normalised targets + Gaussian noise sigma {config.sigma} (seed {config.seed})"
    )
    machine = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = ["events file", "candidate", "events", "hits per event", "seconds per event"]
    head += ["TrackML score", "score - hdbscan's", "speed-up over hdbscan"]
    lines = [
        "# Clustering large TrackML events: candidates on the same parameters",
        "",
        f"Command: `{command}`",
        "",
        f"Parameters: {source}; HDBSCAN min_cluster_size {config.min_cluster_size}, "
        f"min_samples {config.min_samples}; region pools of {config.jobs} processes; "
        f"{machine}, {when}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table.itertuples():
        ref = base.loc[row.file]
        lines.append(
            f"| {row.file} | {row.candidate} | {row.events} | {row.hits:,.0f} | "
            f"{row.seconds:.3f} | {row.score:.4f} | {row.score - ref.score:+.4f} | "
            f"{ref.seconds / row.seconds:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", nargs="+", required=True, help="hit-table files of large events")
    parser.add_argument("--model", help="checkpoint whose predictions are clustered")
    parser.add_argument("--sigma", type=float, default=0.02, help="noise on the true targets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--min_cluster_size", type=int, default=5, help="HDBSCAN setting")
    parser.add_argument("--min_samples", type=int, default=2, help="HDBSCAN setting")
    parser.add_argument("--regions", type=int, nargs="*", default=[2, 4], help="phi sectors")
    parser.add_argument("--jobs", type=int, default=2, help="processes of the region pool")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=["hdbscan", "sklearn", "fast_hdbscan"],
        help="whole-event implementations",
    )
    parser.add_argument("--max_events", type=int, default=4, help="events per file")
    parser.add_argument("--extra_path", help="folder added to sys.path (e.g. fast_hdbscan)")
    parser.add_argument("--out", default=str(RESULTS), help="markdown table written here")
    args = parser.parse_args(argv)
    if args.extra_path:
        sys.path.append(args.extra_path)  # after the venv: its numpy wins
    config = BenchConfig(
        tuple(args.data),
        args.model,
        args.sigma,
        args.seed,
        args.min_cluster_size,
        args.min_samples,
        tuple(args.regions),
        args.jobs,
        tuple(args.candidates),
        args.max_events,
        args.out,
    )
    print(f"config: {config}")
    frame = run(config)
    command = "python -m benchmarks.clustering_large " + " ".join(argv or sys.argv[1:])
    text = markdown(frame, config, command)
    Path(config.out).write_text(text)
    print(text)


if __name__ == "__main__":
    run_cli(main)
