"""Hit filter + MaskFormer tracker next to the regressor + HDBSCAN: benchmarks/results_tracker.md.

Rows (each says what it needs when it cannot be computed):

* REDVID helical 10-50 and 50-100 test sets: the shipped regressors (``models/hel_*.pt``)
  through the project's evaluation (``evaluation.pipeline.evaluate_checkpoint``, first
  ``--redvid_events`` events); the tracker family reads TrackML events only, so its cell
  says so;
* the tracker chain (``--filter_model``, ``--tracker_model``) on the test split of its
  data (``--data_dir``), on full simulated events (``--full_dir``, if given) and on the
  real sample event's pixel hits (``--real_event``);
* TML regressors + HDBSCAN (``--regressors``, whole events and ``--regressor_regions``)
  on the same test split as the chain, the same hits and metric code
  (``tracker.compare``).

Timing is wall-clock on the machine it runs on (a busy 2-core CPU unless stated).

    python -m benchmarks.tracker --preset cpu                    # CPU-scale chain
    python -m benchmarks.tracker --preset published --full_dir data/tracker_full_test

Run it as a module: as a script (python benchmarks/tracker.py) its own folder comes first
on the import path and this file would shadow the tracker package.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from data_processing.errors import run_cli
from evaluation.options import apply_threads

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_EVENT = REPO_ROOT.parent / "shared" / "data" / "trackml_sample" / "event000000001"
COLUMNS = (
    "trackml_score",
    "gnn_pt0.9_double_majority",
    "gnn_pt1_double_majority",
    "gnn_pt1_perfect",
    "gnn_pt1_fake_rate",
    "gnn_pt1_duplicate_rate",
    "hepattn_efficiency",
    "hepattn_fake_rate",
    "filter_efficiency",
    "filter_purity",
    "filter_ms_per_event",
    "tracker_ms_per_event",
)

REGRESSOR_COLUMNS = (
    "trackml_score",
    "gnn_pt0.9_double_majority",
    "gnn_pt1_double_majority",
    "gnn_pt1_perfect",
    "gnn_pt1_fake_rate",
    "gnn_pt1_duplicate_rate",
    "model_ms_per_event",
    "clustering_ms_per_event",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="tracker preset (default: cpu)")
    parser.add_argument("--filter_model", default=None, help="default: the preset's")
    parser.add_argument("--tracker_model", default=None, help="default: the preset's")
    parser.add_argument("--data_dir", default=None, help="the tracker's events (default: preset's)")
    parser.add_argument("--full_dir", default=None, help="full simulated events (default: none)")
    parser.add_argument("--real_event", default=str(REAL_EVENT), help="real TrackML event prefix")
    parser.add_argument(
        "--regressors",
        nargs="*",
        default=[str(REPO_ROOT / "models" / "tml_10-50.pt")],
        help="regressor checkpoints scored on the chain's test split (e.g. a TML:200-500 one)",
    )
    parser.add_argument(
        "--regressor_regions",
        nargs="*",
        default=["1x1", "2x4p"],
        help="whole events (1x1) and theta x phi decompositions (p: merge predictions)",
    )
    parser.add_argument(
        "--filter_thresholds",
        type=float,
        nargs="+",
        default=None,
        help="filter thresholds of the chain's rows (default: the preset's one)",
    )
    parser.add_argument("--redvid_events", type=int, default=500, help="REDVID test events")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--note", default="", help="a line on where the checkpoints come from")
    parser.add_argument(
        "--out", default=str(REPO_ROOT / "benchmarks" / "results_tracker.md"), help="table"
    )
    return parser


def regressor_row(model: Path, max_events: int, device: str) -> dict[str, Any]:
    """Shipped regressor + HDBSCAN on its REDVID test set (first ``max_events`` events)."""
    from evaluation.options import EvaluationConfig
    from evaluation.pipeline import evaluate_checkpoint

    started = time.perf_counter()
    metrics = evaluate_checkpoint(
        EvaluationConfig(
            model_name=str(model),
            max_events=max_events,
            cluster_jobs=1,
            device=device,
            definition="trackformers_min_hits",
        )
    )
    seconds = time.perf_counter() - started
    return {
        "trackml_score": metrics["trackml_score"],
        "DM": metrics["double_majority"],
        "perfect": metrics["perfect"],
        "fake_rate": metrics.get("fake_rate", float("nan")),
        "ms_per_event": 1000 * seconds / max_events,
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def regressor_lines(args: argparse.Namespace, config: Any) -> list[str]:
    """The table of ``--regressors`` x ``--regressor_regions`` on the chain's test split
    (split with the tracker checkpoint's seed where there is one, as tracker.evaluate)."""
    from checkpoint import load_checkpoint
    from evaluation.decomposition import parse_regions
    from tracker.compare import score_regressor
    from tracker.data import read_hit_set
    from tracker.train import split_hit_sets

    lines: list[str] = []
    lines += [
        "",
        f"## Regressor + HDBSCAN on the same test split of {config.data_dir}",
        "",
        "The same hits as the chain's input (tracker.compare), the same metric code; the "
        "published TML:200-500 figures (SPEC section 7) are 0.70 on its own sub-events, "
        "0.20 at 2000-5000 particles, 0.06 on full events.",
        "",
        "| regressor | regions | events | " + " | ".join(REGRESSOR_COLUMNS) + " |",
        "|---" * (len(REGRESSOR_COLUMNS) + 3) + "|",
    ]
    test_hits = None
    for checkpoint in args.regressors:
        if not Path(checkpoint).exists():
            lines.append(f"| {checkpoint} | not run: no such checkpoint |")
            continue
        if test_hits is None:
            if Path(config.tracker_model).exists():
                seed = load_checkpoint(config.tracker_model)["data"]["split_seed"]
                config = replace(config, seed=seed)
            test_hits = split_hit_sets(config, read_hit_set(config.data_dir, config.cuts))[2]
        for text in args.regressor_regions:
            metrics = score_regressor(checkpoint, test_hits, config.eta_max, parse_regions(text))
            print(checkpoint, text, metrics)
            cells = " | ".join(_cell(metrics.get(c, "")) for c in REGRESSOR_COLUMNS)
            lines.append(f"| {Path(checkpoint).name} | {text} | {metrics['n_events']} | {cells} |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_threads(0)
    print("config:", json.dumps(vars(args), sort_keys=True))
    from tracker.config import preset
    from tracker.data import read_hit_set
    from tracker.evaluate import evaluate

    config = preset(args.preset)
    config = replace(
        config,
        device=args.device,
        filter_model=args.filter_model or config.filter_model,
        tracker_model=args.tracker_model or config.tracker_model,
        data_dir=args.data_dir or config.data_dir,
    )
    lines = [
        "# Hit filter + MaskFormer tracker vs regressor + HDBSCAN",
        "",
        f"Command: `python -m benchmarks.tracker {' '.join(argv or [])}`".rstrip() + "; "
        f"tracker preset `{args.preset}`, device {args.device}. Efficiencies: gnn_tracking "
        "definition (pixel layers >= 3, |eta| cut of the preset) at pT >= 0.9 / 1.0 GeV; "
        "hepattn's on the overlapping masks (tracker/metrics.py). Times: wall clock per "
        "event, one event at a time. TrackML score: over all hits of the preset's volumes, "
        "whose weight includes particles below the pT cut that the tracker is not trained "
        "to find, so its ceiling is below 1.",
        "",
        *([args.note, ""] if args.note else []),
        "## Tracker chain on TrackML-geometry events",
        "",
        "| events | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    have_models = Path(config.filter_model).exists() and Path(config.tracker_model).exists()
    sets: list[tuple[str, Any]] = [
        (f"test split of {config.data_dir}", None),
        (f"test split of {config.data_dir}, ideal filter (true target hits)", "ideal"),
    ]
    if args.full_dir:
        sets.append((f"full events {args.full_dir}", args.full_dir))
    if Path(f"{args.real_event}-hits.csv.gz").exists():
        sets.append(("real sample event000000001 (5 % subsample)", args.real_event))
    for name, source in sets:
        if not have_models:
            lines.append(
                f"| {name} | not run: no trained checkpoints "
                f"({config.filter_model}, {config.tracker_model}) |"
            )
            continue
        hits, chosen = None, config
        if source == "ideal":
            chosen = replace(config, ideal_filter=True)
        elif source is not None:
            from data_processing.trackml_events import read_event
            from tracker.data import hit_set_from_events

            path = Path(source)
            hits = (
                read_hit_set(str(path), config.cuts)
                if path.is_dir()
                else hit_set_from_events([read_event(path)], config.cuts)
            )
        thresholds = [None] if source == "ideal" else args.filter_thresholds or [None]
        for threshold in thresholds:
            label = name
            if threshold is not None:
                chosen = replace(config, filter_threshold=threshold)
                label = f"{name}, filter >= {threshold:g}"
            metrics = evaluate(chosen, hits)
            print(label, metrics)
            cells = " | ".join(_cell(metrics.get(c, "")) for c in COLUMNS)
            lines.append(f"| {label} ({metrics['n_events']} events) | {cells} |")
    lines += [
        "",
        "## REDVID helical sets: shipped regressor + HDBSCAN",
        "",
        "| test set | regressor score | DM | perfect | fake rate | ms per event | tracker |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("hel_10-50", "hel_50-100"):
        model = REPO_ROOT / "models" / f"{name}.pt"
        row = regressor_row(model, args.redvid_events, args.device)
        print(name, row)
        lines.append(
            f"| {name} (first {args.redvid_events} events) | "
            + " | ".join(
                _cell(row[k])
                for k in ("trackml_score", "DM", "perfect", "fake_rate", "ms_per_event")
            )
            + " | not trained: tracker/ reads TrackML events only |"
        )
    lines += regressor_lines(args, config)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
