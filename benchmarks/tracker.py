"""Hit filter + MaskFormer tracker next to the regressor + HDBSCAN: benchmarks/results_tracker.md.

Rows (each says what it needs when it cannot be computed):

* REDVID helical 10-50 and 50-100 test sets: the shipped regressors (``models/hel_*.pt``)
  through the project's evaluation (``evaluation.pipeline.evaluate_checkpoint``, first
  ``--redvid_events`` events); the tracker family reads TrackML events only, so its cell
  says so;
* the tracker chain of each ``--preset`` (its checkpoints, or ``--filter_model``,
  ``--tracker_model`` with one preset) on the test split of its data (``--data_dir``),
  on larger simulated events (each ``--full_dir``: e.g. 2000-5000 particles, full
  events) and on the real sample event's pixel hits (``--real_event``);
* TML regressors + HDBSCAN (``--regressors``, whole events and ``--regressor_regions``)
  on the same test split as the chain, the same hits and metric code
  (``tracker.compare``).

Timing is wall-clock on the machine it runs on (a busy 2-core CPU unless stated).

    python -m benchmarks.tracker --preset cpu                    # CPU-scale chain
    python -m benchmarks.tracker --preset cpu cpu_full --full_dir data/tml/sim_test
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

from data_processing.errors import UserError, run_cli
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
    parser.add_argument(
        "--preset", nargs="+", default=["cpu"], help="tracker presets, a table each (default: cpu)"
    )
    parser.add_argument("--filter_model", default=None, help="default: the preset's")
    parser.add_argument("--tracker_model", default=None, help="default: the preset's")
    parser.add_argument("--data_dir", default=None, help="the tracker's events (default: preset's)")
    parser.add_argument(
        "--full_dir",
        nargs="*",
        default=[],
        help="folders of larger simulated events (e.g. 2000-5000 particles, full events): "
        "chain and regressor rows on each",
    )
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
    parser.add_argument(
        "--regressor_max_hits",
        type=int,
        default=12_000,
        help="whole-event (1x1) regressor rows only for events of at most this many hits "
        "(padded exact attention on a CPU holds hits^2 weights per head)",
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


def regressor_lines(
    args: argparse.Namespace, config: Any, full_sets: list[tuple[str, Any]]
) -> list[str]:
    """The table of ``--regressors`` x ``--regressor_regions`` on the chain's test split
    (split with the tracker checkpoint's seed where there is one, as tracker.evaluate)
    and on every ``full_sets`` (label, HitSet) the chain saw."""
    from checkpoint import load_checkpoint
    from evaluation.decomposition import parse_regions
    from tracker.compare import score_regressor
    from tracker.data import read_hit_set
    from tracker.train import split_hit_sets

    lines: list[str] = []
    lines += [
        "",
        f"## Regressor + HDBSCAN on the chain's events (test split of {config.data_dir} "
        "and the larger events)",
        "",
        "The same hits as the chain's input (tracker.compare), the same metric code; the "
        "published TML:200-500 figures (SPEC section 7) are 0.70 on its own sub-events, "
        f"0.20 at 2000-5000 particles, 0.06 on full events. Whole events (1x1) of more than "
        f"{args.regressor_max_hits:,} hits are not run (padded exact attention on the CPU).",
        "",
        "| regressor | events | regions | n | " + " | ".join(REGRESSOR_COLUMNS) + " |",
        "|---" * (len(REGRESSOR_COLUMNS) + 4) + "|",
    ]
    sets: list[tuple[str, Any]] = []
    for checkpoint in args.regressors:
        if not Path(checkpoint).exists():
            lines.append(f"| {checkpoint} | not run: no such checkpoint |")
            continue
        if not sets:
            if Path(config.tracker_model).exists():
                seed = load_checkpoint(config.tracker_model)["data"]["split_seed"]
                config = replace(config, seed=seed)
            test_hits = split_hit_sets(config, read_hit_set(config.data_dir, config.cuts))[2]
            sets = [("test split", test_hits), *full_sets]
        for label, hits in sets:
            for text in args.regressor_regions:
                head = f"| {Path(checkpoint).name} | {label} | {text} |"
                largest = int(hits.sizes.max()) if hits.n_events else 0
                if text == "1x1" and largest > args.regressor_max_hits:
                    lines.append(f"{head} not run: events of up to {largest:,} hits |")
                    continue
                regions = parse_regions(text)
                metrics = score_regressor(checkpoint, hits, config.eta_max, regions)
                print(checkpoint, label, text, metrics, flush=True)
                cells = " | ".join(_cell(metrics.get(c, "")) for c in REGRESSOR_COLUMNS)
                lines.append(f"{head} {metrics['n_events']} | {cells} |")
    lines.append("")
    return lines


def command_line(argv: list[str] | None) -> str:
    """The benchmark's command as typed, less the ``--note`` text (printed on its own)."""
    words = list(argv or [])
    if "--note" in words:
        at = words.index("--note")
        del words[at : at + 2]
    return " ".join(["python -m benchmarks.tracker", *words])


def chain_lines(
    args: argparse.Namespace, config: Any, full_sets: list[tuple[str, Any]]
) -> list[str]:
    """The chain's rows of one preset: its test split (filter and ideal filter), every
    ``full_sets`` (folder, HitSet) and the real sample event's pixel hits."""
    from tracker.evaluate import evaluate

    sectors = f", the chain in {config.phi_sectors} phi sectors" if config.phi_sectors > 1 else ""
    lines = [
        f"## Tracker chain, preset `{config.preset}` ({config.filter_model}, "
        f"{config.tracker_model}{sectors})",
        "",
        "| events | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    have_models = Path(config.filter_model).exists() and Path(config.tracker_model).exists()
    sets: list[tuple[str, Any]] = [
        (f"test split of {config.data_dir}", None),
        (f"test split of {config.data_dir}, ideal filter (true target hits)", "ideal"),
    ]
    sets += [(f"events of {folder}", hits) for folder, hits in full_sets]
    if Path(f"{args.real_event}-hits.csv.gz").exists():
        sets.append(("real sample event000000001 (5 % subsample)", args.real_event))
    for name, source in sets:
        if not have_models:
            lines.append(f"| {name} | not run: no trained checkpoints |")
            continue
        hits, chosen = None, config
        if isinstance(source, str) and source == "ideal":
            chosen = replace(config, ideal_filter=True)
        elif isinstance(source, str):
            from data_processing.trackml_events import read_event
            from tracker.data import hit_set_from_events

            hits = hit_set_from_events([read_event(Path(source))], config.cuts)
        elif source is not None:
            hits = source
        ideal = isinstance(source, str) and source == "ideal"
        for threshold in [None] if ideal else args.filter_thresholds or [None]:
            label = name
            if threshold is not None:
                chosen = replace(chosen, filter_threshold=threshold)
                label = f"{label}, filter >= {threshold:g}"
            metrics = evaluate(chosen, hits)
            print(config.preset, label, metrics, flush=True)
            cells = " | ".join(_cell(metrics.get(c, "")) for c in COLUMNS)
            lines.append(f"| {label} ({metrics['n_events']} events) | {cells} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    apply_threads(0)
    print("config:", json.dumps(vars(args), sort_keys=True))
    from tracker.config import preset
    from tracker.data import read_hit_set

    given = {
        "filter_model": args.filter_model,
        "tracker_model": args.tracker_model,
        "data_dir": args.data_dir,
    }
    overrides = {key: value for key, value in given.items() if value}
    if overrides and len(args.preset) > 1:
        raise UserError("--filter_model, --tracker_model and --data_dir need one --preset")
    configs = [replace(preset(name), device=args.device, **overrides) for name in args.preset]
    lines = [
        "# Hit filter + MaskFormer tracker vs regressor + HDBSCAN",
        "",
        f"Command: `{command_line(argv)}`; "
        f"device {args.device}. Efficiencies: gnn_tracking "
        "definition (pixel layers >= 3, |eta| cut of the preset) at pT >= 0.9 / 1.0 GeV; "
        "hepattn's on the overlapping masks (tracker/metrics.py). Times: wall clock per "
        "event, one event at a time. TrackML score: over all hits of the preset's volumes, "
        "whose weight includes particles below the pT cut that the tracker is not trained "
        "to find, so its ceiling is below 1.",
        "",
        *([args.note, ""] if args.note else []),
    ]
    # The larger events' hits, read once for every preset: their cuts must agree.
    cuts = configs[0].cuts
    if any(c.cuts != cuts for c in configs):
        raise UserError("--preset: the presets select different hits; run them apart")
    full_sets = [(folder, read_hit_set(folder, cuts)) for folder in args.full_dir]
    for config in configs:
        lines += chain_lines(args, config, full_sets)
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
    named = [(Path(folder).name, hits) for folder, hits in full_sets]
    lines += regressor_lines(args, configs[0], named)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
