"""Benchmark: a TML model on events larger than it was trained on (SPEC 7's 0.45/0.20/0.06).

The paper applied its TML:200-500 model to events of 500-1000 and 2000-5000 particles and
to full events (about 100k hits) and saw the TrackML score fall to 0.45, 0.20 and 0.06.
This script measures the same on simulated events (hit-table files of sub-events, e.g.
``python -m data_processing.trackml_data data/tml/sim_test --particles 2000-5000
--sub_events 1 --seed 2 --out data/tml/large_2000-5000.parquet``; ``--particles
all`` keeps every particle: a full event without its noise) in two ways:

- ``whole``: the model on the whole event (skipped above ``--max_whole_hits``: exact
  attention over n hits needs memory and time of order n^2);
- ``regions TxP``: domain decomposition (``evaluation.decomposition``): T bands of the hit
  polar angle and P azimuth sectors with an overlap, every region one event for the model
  and HDBSCAN, the labels merged back; ``TxPp``: the model runs per region, each hit keeps
  its home region's prediction and HDBSCAN clusters the whole event.

Per event it records the model, clustering and scoring seconds (wall clock, one torch
thread, one clustering process), the TrackML score and the efficiencies ("trackformers"
as published, and gnn_tracking's at pT >= 0.9 GeV). Writes a markdown table and a PNG of
the score against the event size. Run from the repository root::

    python -m benchmarks.full_events --model models/tml_10-50.pt \
        --data data/tml/large_500-1000.parquet data/tml/large_2000-5000.parquet \
        data/tml/large_full.parquet --regions 1x1 4x8 8x16
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.dataset import load_events
from data_processing.errors import run_cli
from evaluation.clustering import ClusteringConfig
from evaluation.decomposition import parse_regions, reconstruct_in_regions
from evaluation.inference import score_reconstruction

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results_full_events.md"
FIGURE = HERE / "figures" / "full_events_score.png"
#: The paper's TML:200-500 model on larger events (SPEC 7).
PUBLISHED = {"500-1000": 0.45, "2000-5000": 0.20, "full": 0.06}


@dataclass(frozen=True)
class FullEventsConfig:
    """One run: checkpoints, event files, the decompositions (``"TxP"``) to compare."""

    models: tuple[str, ...]
    data: tuple[str, ...]
    regions: tuple[str, ...]
    overlap: float
    max_whole_hits: int
    max_events: int
    cluster_implementation: str
    out: str
    figure: str


def measure_event(
    model: torch.nn.Module,
    normaliser: Any,
    events: Any,
    clustering: ClusteringConfig,
    regions: tuple[int, int, str],
    overlap: float,
) -> dict[str, Any]:
    """Seconds (model, clustering, scoring), score and efficiencies of one event set."""
    labels, timings = reconstruct_in_regions(
        model, events, normaliser, clustering, regions, overlap
    )
    start = time.perf_counter()
    metrics = score_reconstruction(events, labels)
    scoring_s = time.perf_counter() - start
    gnn = metrics["efficiencies"].get("gnn_tracking_pt0.9", {})
    return {
        "model_s": timings["model_s"],
        "clustering_s": timings["clustering_s"],
        "scoring_s": scoring_s,
        "score": metrics["trackml_score"],
        "perfect": metrics["perfect"],
        "double_majority": metrics["double_majority"],
        "lhc": metrics["lhc"],
        "gnn_perfect_pt09": gnn.get("perfect", float("nan")),
        "gnn_dm_pt09": gnn.get("double_majority", float("nan")),
    }


def run(config: FullEventsConfig) -> pd.DataFrame:
    """One row per (model, file, event, decomposition)."""
    return pd.concat([run_model(config, name) for name in config.models], ignore_index=True)


def run_model(config: FullEventsConfig, checkpoint: str) -> pd.DataFrame:
    """One row per (file, event, decomposition) of one checkpoint."""
    torch.set_num_threads(1)
    state = load_checkpoint(checkpoint)
    model, normaliser = model_from_checkpoint(state)
    stored = state.get("clustering", {})
    clustering = ClusteringConfig(
        stored.get("min_cluster_size", 5),
        stored.get("min_samples", 2),
        implementation=config.cluster_implementation,
        noise="unassigned",  # as the published pipeline (shipped_models)
    )
    rows = []
    for path in config.data:
        events = load_events(path, "trackml", max_nr_hits=None)
        for i in range(min(events.n_events, config.max_events)):
            one = events.subset(np.array([i]))
            n_particles = int(np.unique(one.particle_id[one.particle_id != 0]).size)
            for text in config.regions:
                regions = parse_regions(text)
                if regions[:2] == (1, 1) and one.n_hits > config.max_whole_hits:
                    print(f"{Path(path).name} event {i}: {one.n_hits} hits, whole skipped")
                    continue
                with torch.no_grad():
                    row = measure_event(model, normaliser, one, clustering, regions, config.overlap)
                row = {
                    "model": Path(checkpoint).stem,
                    "file": Path(path).name,
                    "event": i,
                    "hits": one.n_hits,
                    "particles": n_particles,
                    "regions": text,
                } | row
                rows.append(row)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return pd.DataFrame(rows)


def size_class(particles: float) -> str:
    """The paper's event-size class of a particle count."""
    if particles <= 1000:
        return "500-1000"
    if particles <= 5000:
        return "2000-5000"
    return "full"


def markdown(frame: pd.DataFrame, config: FullEventsConfig, command: str) -> str:
    """Mean per (file, decomposition) with the paper's number beside it."""
    keys = ["hits", "particles", "score", "perfect", "double_majority", "lhc"]
    keys += ["gnn_perfect_pt09", "gnn_dm_pt09", "model_s", "clustering_s", "scoring_s"]
    groups = ["model", "file", "regions"]
    table = frame.groupby(groups, sort=False)[keys].mean().reset_index()
    table["events"] = frame.groupby(groups, sort=False).size().to_numpy()
    head = ["model", "events file", "regions (theta x phi)", "events", "hits", "particles"]
    head += ["score"]
    head += ["paper (TML:200-500 model)", "perfect", "DM", "LHC", "gnn perfect pT>0.9"]
    head += ["gnn DM pT>0.9", "model s", "clustering s", "scoring s"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table.itertuples():
        paper = PUBLISHED[size_class(r.particles)]
        cells = [r.model, r.file, r.regions, f"{r.events}", f"{r.hits:,.0f}"]
        cells += [f"{r.particles:,.0f}"]
        cells += [f"{r.score:.4f}", f"{paper}", f"{r.perfect:.3f}", f"{r.double_majority:.3f}"]
        cells += [f"{r.lhc:.3f}", f"{r.gnn_perfect_pt09:.3f}", f"{r.gnn_dm_pt09:.3f}"]
        cells += [f"{r.model_s:.2f}", f"{r.clustering_s:.2f}", f"{r.scoring_s:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"Command: `{command}`\n\nModels: {', '.join(f'`{m}`' for m in config.models)}; "
        f"region overlap {config.overlap} "
        f"rad; clustering {config.cluster_implementation}, one process; torch one thread; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n" + "\n".join(lines) + "\n"
    )


def plot(frame: pd.DataFrame, path: str) -> None:
    """Score against hits per event, one line per model and decomposition, the paper's
    points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (model, regions), part in frame.groupby(["model", "regions"], sort=False):
        mean = part.groupby("file", sort=False)[["hits", "score"]].mean().sort_values("hits")
        ax.plot(mean.hits, mean.score, "o-", label=f"{model}, regions {regions}")
    paper_hits = [7_500, 35_000, 100_000]  # about 10 hits per particle; a full event
    ax.plot(paper_hits, list(PUBLISHED.values()), "k^--", label="paper, TML:200-500 model")
    ax.set_xscale("log")
    ax.set_xlabel("hits per event")
    ax.set_ylabel("TrackML score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", nargs="+", required=True, help="TML checkpoints")
    parser.add_argument("--data", nargs="+", required=True, help="hit-table files of events")
    parser.add_argument("--regions", nargs="+", default=["1x1", "4x8"], help="TxP splits")
    parser.add_argument("--overlap", type=float, default=0.05, help="region margin, rad")
    parser.add_argument(
        "--max_whole_hits", type=int, default=40_000, help="largest event run whole"
    )
    parser.add_argument("--max_events", type=int, default=2, help="events per file")
    parser.add_argument("--cluster_implementation", default="hdbscan", help="hdbscan | sklearn")
    parser.add_argument("--out", default=str(RESULTS), help="markdown table")
    parser.add_argument("--figure", default=str(FIGURE), help="PNG of score vs size")
    args = parser.parse_args(argv)
    config = FullEventsConfig(
        tuple(args.model),
        tuple(args.data),
        tuple(args.regions),
        args.overlap,
        args.max_whole_hits,
        args.max_events,
        args.cluster_implementation,
        args.out,
        args.figure,
    )
    print(f"config: {config}")
    frame = run(config)
    command = "python -m benchmarks.full_events " + " ".join(argv or sys.argv[1:])
    Path(config.out).write_text(markdown(frame, config, command))
    plot(frame, config.figure)
    print(Path(config.out).read_text())


if __name__ == "__main__":
    run_cli(main)
