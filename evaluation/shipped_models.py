"""The trained models shipped in ``models/``: packaging, the results table, the CI floors.

``models/manifest.json`` lists every shipped checkpoint with its data set (track type
and tracks per event), the published numbers it stands beside (SPEC section 7) and the
floor its TrackML score must stay above on the small CI test set. Each shipped
checkpoint names its own held-out test set (``test_set``: a REDVID-style simulation
with a seed the training data never used), so ``python evaluation/test.py --model_name
models/<name>.pt`` regenerates that set and scores on it with nothing else given.

Usage:
    python -m evaluation.shipped_models                      # table of every model
    python -m evaluation.shipped_models --models hel_10-50 --n_events 200
    python -m evaluation.shipped_models --package runs/x.pt --name hel_10-50
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from checkpoint import inference_checkpoint, load_checkpoint, save_checkpoint
from data_processing.errors import run_cli
from data_processing.redvid import SimulationConfig, ensure_dataset
from evaluation.options import (
    DefaultsHelpFormatter,
    EvaluationConfig,
    apply_threads,
    check_writable_file,
    thread_note,
)
from evaluation.pipeline import evaluate_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
MANIFEST = MODELS_DIR / "manifest.json"
METRICS = ("trackml_score", "perfect", "double_majority", "lhc")
HEADERS = ("TrackML score", "perfect", "DM", "LHC")


@dataclass(frozen=True)
class ShippedModel:
    """One entry of the manifest.

    name: checkpoint ``models/<name>.pt``; track_type / tracks: its REDVID data set;
    published: SPEC 7's numbers keyed like ``METRICS``; ci_floor: lowest acceptable
    TrackML score on the CI set (``ci_events`` events drawn with its test-set seed);
    ci_events: this model's CI set size where it differs from the manifest's (a large
    model's set is smaller, so the test suite stays within its time budget).
    """

    name: str
    track_type: str
    tracks: str
    published: dict[str, float]
    ci_floor: float
    # TrackML models: their sub-event test sets (evaluation.tml_test_sets), else None.
    test_sets: dict[str, Any] | None = None
    ci_events: int | None = None

    def checkpoint(self, folder: str | Path = MODELS_DIR) -> Path:
        return Path(folder) / f"{self.name}.pt"


@dataclass(frozen=True)
class Manifest:
    """The manifest: the test-set seed and size shared by all models, and the models."""

    test_seed: int
    test_events: int
    ci_events: int
    models: tuple[ShippedModel, ...]

    def ci_events_of(self, model: ShippedModel) -> int:
        """Events (sub-events) of ``model``'s CI set."""
        return model.ci_events or self.ci_events

    def test_set(self, model: ShippedModel, n_events: int | None = None) -> dict[str, Any]:
        """SimulationConfig fields of ``model``'s test set (``n_events`` overrides); for a
        TrackML model its sub-event sets' definition (``evaluation.tml_test_sets``)."""
        if model.test_sets is not None:
            size = n_events or model.test_sets["n_sub_events"]
            return {**model.test_sets, "n_sub_events": size}
        return {
            "n_events": n_events or self.test_events,
            "tracks": model.tracks,
            "track_type": model.track_type,
            "seed": self.test_seed,
        }


def read_manifest(path: str | Path = MANIFEST) -> Manifest:
    """Parse ``models/manifest.json``; a clear error naming the file on a bad entry."""
    raw = json.loads(Path(path).read_text())
    try:
        models = tuple(ShippedModel(**entry) for entry in raw["models"])
        return Manifest(raw["test_seed"], raw["test_events"], raw["ci_events"], models)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed manifest ({err})") from err


def package(
    source: str | Path, model: ShippedModel, manifest: Manifest, folder: str | Path = MODELS_DIR
) -> Path:
    """Write ``source``'s best weights as the shipped ``<folder>/<name>.pt``, naming the
    model's test set; returns the path written (atomically)."""
    state = load_checkpoint(source)
    data = state["data"]
    if (data["data_type"], data["tracks"]) != (model.track_type, model.tracks):
        raise ValueError(
            f"{source}: trained on {data['data_type']} {data['tracks']}, but the manifest "
            f"entry {model.name} is {model.track_type} {model.tracks}"
        )
    path = model.checkpoint(folder)
    save_checkpoint(inference_checkpoint(state, manifest.test_set(model)), path)
    return path


def evaluate_model(
    model: ShippedModel,
    manifest: Manifest,
    n_events: int | None = None,
    cluster_jobs: int = -1,
    data_dir: str | Path = REPO_ROOT / "data",
) -> dict[str, Any]:
    """Metrics of ``model`` on a test set simulated with its manifest seed.

    ``n_events`` smaller than the manifest's test set simulates a set of that size with
    the same seed (the CI set), not a prefix of the full one. Sets are cached in
    ``data_dir``.
    """
    if model.test_sets is not None:
        return evaluate_tml_model(model, manifest, n_events, cluster_jobs, data_dir)[0][1]
    simulation = SimulationConfig(**manifest.test_set(model, n_events))
    path = ensure_dataset(simulation, data_dir)
    return evaluate_file(model, path, cluster_jobs)


def evaluate_tml_model(
    model: ShippedModel,
    manifest: Manifest,
    n_events: int | None = None,
    cluster_jobs: int = -1,
    data_dir: str | Path = REPO_ROOT / "data",
) -> list[tuple[str, dict[str, Any]]]:
    """(source, metrics) of a TrackML model on each of its sets that can be built: the
    real-hit set only where the real sample is (a note otherwise), then the simulated one."""
    from evaluation.tml_test_sets import build_test_set, definition_sets, real_event_prefix

    results = []
    for spec in definition_sets(manifest.test_set(model, n_events)):
        path = build_test_set(spec, Path(data_dir) / "tml")
        if path is None:
            print(f"{model.name}: no real sample at {real_event_prefix()}; real-hit set skipped")
            continue
        results.append((spec.source, evaluate_file(model, path, cluster_jobs)))
    return results


def evaluate_file(model: ShippedModel, path: str | Path, cluster_jobs: int) -> dict[str, Any]:
    """Metrics of ``model`` on every event of the file ``path``."""
    config = EvaluationConfig(
        model_name=str(model.checkpoint()),
        data_path=str(path),
        data_type=model.track_type,
        split="all",
        cluster_jobs=cluster_jobs,
        # As the published pipeline: HDBSCAN's outliers (-1) are in no track, so the
        # published LHC does not count each as a submitted track (same TrackML score).
        noise="unassigned",
    )
    return evaluate_checkpoint(config)


def results_table(rows: list[tuple[ShippedModel, dict[str, Any], float]]) -> str:
    """Markdown: ours next to the published numbers, and the difference in score.

    The score carries its standard error over events (per-event std / sqrt(events)).
    """
    head = ["model", "test events", *(f"{h} (ours / published)" for h in HEADERS)]
    lines = ["| " + " | ".join(head) + " | score gap |", "|" + "---|" * (len(head) + 1)]
    for model, metrics, _ in rows:
        error = metrics.get("trackml_score_std", 0.0) / math.sqrt(max(metrics["n_events"], 1))
        published = model.published["trackml_score"]
        cells = [f"{metrics['trackml_score']:.4f} ± {error:.4f} / {published}"]
        cells += [f"{metrics[key]:.4f} / {model.published[key]}" for key in METRICS[1:]]
        gap = metrics["trackml_score"] - published
        lines.append(
            f"| {model.name} | {metrics['n_events']} | " + " | ".join(cells) + f" | {gap:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[tuple[ShippedModel, dict[str, Any], float]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--manifest", default=str(MANIFEST), help="the models and their sets")
    parser.add_argument("--models", nargs="+", help="names (default: every model)")
    parser.add_argument("--n_events", type=int, help="test events (default: the manifest's)")
    parser.add_argument(
        "--cluster_jobs", type=int, default=-1, help="clustering processes (-1: all cores)"
    )
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--package", metavar="CHECKPOINT", help="ship this training checkpoint")
    parser.add_argument("--name", help="manifest name of the model to --package")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads; 0: OMP_NUM_THREADS if set, else 1",
    )
    args = parser.parse_args(argv)
    if args.out:
        check_writable_file(args.out, "--out")
    print(f"torch CPU threads: {thread_note(apply_threads(args.threads))}")
    manifest = read_manifest(args.manifest)
    print(f"manifest {args.manifest}: test seed {manifest.test_seed}, {manifest.test_events} ev")
    by_name = {m.name: m for m in manifest.models}
    if args.package:
        if args.name not in by_name:
            parser.error(f"--package needs --name, one of {sorted(by_name)}")
        print(f"wrote {package(args.package, by_name[args.name], manifest)}")
        return []
    unknown = sorted(set(args.models or []) - set(by_name))
    if unknown:
        parser.error(f"unknown models {unknown}; the manifest has {sorted(by_name)}")
    rows = []
    for name in args.models or list(by_name):
        tick = time.perf_counter()
        model = by_name[name]
        if model.test_sets is None:
            scored = [(model, evaluate_model(model, manifest, args.n_events, args.cluster_jobs))]
        else:  # one row per TML test set: real hits (where the sample is), simulated
            sets = evaluate_tml_model(model, manifest, args.n_events, args.cluster_jobs)
            scored = [(replace(model, name=f"{name} ({src})"), m) for src, m in sets]
        seconds = time.perf_counter() - tick
        for row_model, metrics in scored:
            rows.append((row_model, metrics, seconds))
            score = metrics["trackml_score"]
            print(f"{row_model.name}: TrackML score {score:.4f} ({seconds:.0f} s)", flush=True)
    table = results_table(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return rows


if __name__ == "__main__":
    run_cli(main)
