"""Performance statistics of a checkpoint: MSE, per-event timings, efficiencies.

Usage:
    python evaluation/performance_stats.py --model_name runs/transformer_regressor.pt
    python evaluation/performance_stats.py --model_name m.pt --timed_events 200 \
        --output_dir runs/perf

Takes the options of ``evaluation/test.py`` (same checkpoint, data, split, clustering and
``--grid_search`` handling: ``load_setup`` is imported from there, not copied) except
``--display_event`` (no event display is drawn here, so the option is refused), plus the
timing options below. ``--output_dir`` receives this script's files, not test.py's
figures. Reports, each as mean +- standard deviation over events:

* model time per event on the CPU (wall clock, one event per forward pass, after
  warm-up) and, when CUDA is present, on the GPU (CUDA events around the same call,
  synchronised), plus the batched throughput (events/s) on each;
* clustering time per event (HDBSCAN, one process) and scoring time per event (TrackML
  score of one event);
* the whole pipeline's throughput as test.py runs it (batched model + parallel clustering),
  after an untimed one-event pass (imports, first call, process start-up);
* the MSE (normalised, as the training loss, and per parameter in physical units), the
  TrackML score and the efficiencies.

Writes ``performance.json`` and ``performance.md`` (the markdown table that is also
printed) into ``--output_dir`` (default: ``<checkpoint without suffix>_performance/``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_processing.batching import DeviceEvents
from data_processing.dataset import EventSet, Normaliser
from data_processing.errors import run_cli
from evaluation.clustering import cluster_event, cluster_events_timed, submission_frame
from evaluation.efficiencies import MatchSettings
from evaluation.inference import (
    predict_events,
    predict_track_params,
    reconstruct,
    regression_errors,
    score_reconstruction,
)
from evaluation.options import (
    EvaluationConfig,
    announce_config,
    check_writable_dir,
    check_writable_file,
    option,
    thread_note,
)
from evaluation.pipeline import load_tuned_setup, write_json
from evaluation.scoring import score_event
from evaluation.test import build_arg_parser, config_from_args
from model import TransformerRegressor


@dataclass
class PerformanceConfig(EvaluationConfig):
    """EvaluationConfig plus the timing settings (``--threads`` also sets the CPU
    threads of the timed model; ``--cpu_threads`` is its older name)."""

    output_dir: str | None = option(
        None,
        "write performance.json and performance.md here (default: <checkpoint without "
        "suffix>_performance/; no figures)",
    )
    warmup: int = option(5, "untimed forward passes per device before timing")
    timed_events: int | None = option(None, "time the first N events only (default: all)")


def summarise(seconds: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation, median, min and max of per-event times, in ms."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if len(ms) == 0:
        return {"n": 0}
    return {
        "n": len(ms),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=0)),
        "median_ms": float(np.median(ms)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }


def time_model_per_event(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    device: torch.device,
    warmup: int,
) -> np.ndarray:
    """Model seconds of each event run alone (a batch of one) on ``device``.

    The timed call is ``predict_track_params`` (the evaluation's one inference path) on
    one event already on the device; preparing that event is not timed. The first
    ``warmup`` events are run untimed beforehand (allocator, kernels, caches). On CUDA the
    time is measured with CUDA events around the call and read after synchronising; on
    the CPU it is wall-clock time.

    Returns:
        [E] float64 seconds.
    """
    model = model.to(device)
    cuda = device.type == "cuda"

    def one_event(i: int) -> DeviceEvents:
        return DeviceEvents.from_events(events.subset(np.array([i])), normaliser, device)

    for i in range(min(warmup, events.n_events)):
        predict_track_params(model, one_event(i), 1)
    seconds = np.empty(events.n_events, dtype=np.float64)
    for i in range(events.n_events):
        data = one_event(i)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            predict_track_params(model, data, 1)
            end.record()
            end.synchronize()
            seconds[i] = start.elapsed_time(end) / 1e3
        else:
            tick = time.perf_counter()
            predict_track_params(model, data, 1)
            seconds[i] = time.perf_counter() - tick
    return seconds


def batched_throughput(
    model: TransformerRegressor,
    events: EventSet,
    normaliser: Normaliser,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    """Events per second of the batched model on ``device`` (after one warm-up batch)."""
    warm = events.subset(np.arange(min(batch_size, events.n_events)))
    predict_events(model, warm, normaliser, batch_size, device)
    _, seconds = predict_events(model, events, normaliser, batch_size, device)
    return {
        "seconds": seconds,
        "events_per_s": events.n_events / seconds if seconds > 0 else float("inf"),
        "batch_size": batch_size,
    }


def time_scoring_per_event(events: EventSet, labels: np.ndarray) -> np.ndarray:
    """Seconds of ``score_event`` on each event alone (slicing the frames not timed).

    One untimed call on the first event comes first (pandas' first-use costs).
    """
    truth = events.truth_frame()
    submission = submission_frame(events.hit_event_ids(), events.hit_id, labels)
    first = slice(events.offsets[0], events.offsets[1])
    score_event(truth.iloc[first], submission.iloc[first])
    seconds = np.empty(events.n_events, dtype=np.float64)
    for i in range(events.n_events):
        rows = slice(events.offsets[i], events.offsets[i + 1])
        event_truth, event_submission = truth.iloc[rows], submission.iloc[rows]
        tick = time.perf_counter()
        score_event(event_truth, event_submission)
        seconds[i] = time.perf_counter() - tick
    return seconds


def performance_stats(config: PerformanceConfig) -> dict[str, Any]:
    """Run the pipeline once for the metrics, then time each stage event by event.

    The clustering settings, grid search included, are ``load_setup``'s, as in test.py.
    """
    setup = load_tuned_setup(config)
    events = setup.events
    # Untimed first pass on one event: imports (hdbscan), first model call and process
    # start-up are not part of the pipeline's throughput.
    reconstruct(
        setup.model,
        events.subset(np.arange(1)),
        setup.normaliser,
        setup.clustering,
        config.batch_size,
        setup.device,
    )
    result = reconstruct(
        setup.model, events, setup.normaliser, setup.clustering, config.batch_size, setup.device
    )
    start = time.perf_counter()
    settings = MatchSettings(config.definition, config.pt_min)
    metrics = score_reconstruction(events, result.labels, settings)
    scoring_s = time.perf_counter() - start

    n_timed = events.n_events if config.timed_events is None else config.timed_events
    n_timed = max(1, min(n_timed, events.n_events))
    timed = events.subset(np.arange(n_timed))
    rows = slice(0, int(events.offsets[n_timed]))
    cpu = torch.device("cpu")
    timings: dict[str, Any] = {
        "model_cpu": summarise(
            time_model_per_event(setup.model, timed, setup.normaliser, cpu, config.warmup)
        ),
        "model_cpu_batched": batched_throughput(
            setup.model, events, setup.normaliser, cpu, config.batch_size
        ),
    }
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        timings["model_cuda"] = summarise(
            time_model_per_event(setup.model, timed, setup.normaliser, gpu, config.warmup)
        )
        timings["model_cuda_batched"] = batched_throughput(
            setup.model, events, setup.normaliser, gpu, config.batch_size
        )
    # Untimed first call: importing hdbscan / scikit-learn is not an event's cost.
    cluster_event(result.params[: timed.offsets[1]], setup.clustering)
    _, cluster_seconds = cluster_events_timed(result.params[rows], timed.offsets, setup.clustering)
    timings["clustering"] = summarise(cluster_seconds)
    timings["scoring"] = summarise(time_scoring_per_event(timed, result.labels[rows]))
    pipeline_s = result.timings["model_s"] + result.timings["clustering_s"]
    timings["pipeline"] = {
        **result.timings,
        "scoring_s": scoring_s,
        "device": str(setup.device),
        "cluster_jobs": config.cluster_jobs,
        "events_per_s": events.n_events / pipeline_s if pipeline_s > 0 else float("inf"),
    }
    sizes = events.sizes
    tuning = {} if setup.tuning is None else {"grid_search": setup.tuning}
    return {
        **metrics,
        **tuning,
        "n_non_finite_hits": result.n_non_finite,
        "regression": regression_errors(events, setup.normaliser, result.params),
        "model_name": str(config.model_name),
        "model_parameters": setup.model.n_parameters(),
        "data_type": setup.data_type,
        "clustering": asdict(setup.clustering),
        "hits_per_event": {"mean": float(sizes.mean()), "std": float(sizes.std())},
        "timed_events": n_timed,
        "timings": timings,
        "environment": {
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }


def _ms(stats: dict[str, Any]) -> str:
    """ "mean ± std ms (median m)" of a ``summarise`` dict."""
    if not stats.get("n"):
        return "n/a"
    return f"{stats['mean_ms']:.3f} ± {stats['std_ms']:.3f} ms (median {stats['median_ms']:.3f})"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def markdown_table(stats: dict[str, Any]) -> str:
    """The report as markdown: one summary table and one table of MSE per parameter."""
    t = stats["timings"]
    env = stats["environment"]
    clustering = stats["clustering"]
    n = stats["timed_events"]
    rows = [
        ("checkpoint", f"`{stats['model_name']}` ({stats['model_parameters']:,} parameters)"),
        (
            "events",
            f"{stats['n_events']} ({stats['hits_per_event']['mean']:.1f} ± "
            f"{stats['hits_per_event']['std']:.1f} hits per event); timed: first {n}",
        ),
        ("MSE (normalised targets)", _fraction(stats["regression"]["mse_normalised"])),
        (
            f"model per event, CPU ({thread_note(env['cpu_threads'])}, batch 1)",
            _ms(t["model_cpu"]),
        ),
        (
            "model per event, CUDA (batch 1)",
            _ms(t["model_cuda"]) if "model_cuda" in t else "n/a (no CUDA device)",
        ),
        (
            f"model throughput, CPU (batch {t['model_cpu_batched']['batch_size']})",
            f"{t['model_cpu_batched']['events_per_s']:.1f} events/s",
        ),
    ]
    if "model_cuda_batched" in t:
        rows.append(
            (
                f"model throughput, CUDA (batch {t['model_cuda_batched']['batch_size']})",
                f"{t['model_cuda_batched']['events_per_s']:.1f} events/s",
            )
        )
    if "grid_search" in stats:
        search = stats["grid_search"]
        rows.append(
            (
                "HDBSCAN settings",
                f"grid search on {search['n_events']} validation events: min_cluster_size "
                f"{search['best'][0]}, min_samples {search['best'][1]}",
            )
        )
    rows += [
        (
            f"clustering per event (HDBSCAN {clustering['implementation']}, "
            f"mcs {clustering['min_cluster_size']}, ms {clustering['min_samples']}, 1 process)",
            _ms(t["clustering"]),
        ),
        ("scoring per event (TrackML score)", _ms(t["scoring"])),
        (
            "score + efficiencies of all events in one vectorised pass",
            f"{t['pipeline']['scoring_s'] / stats['n_events'] * 1e3:.3f} ms per event",
        ),
        (
            f"pipeline throughput (model on {t['pipeline']['device']}, clustering "
            f"{t['pipeline']['cluster_jobs']} jobs)",
            f"{t['pipeline']['events_per_s']:.1f} events/s",
        ),
        (
            "TrackML score",
            f"{stats['trackml_score']:.4f} ± {stats['trackml_score_std']:.4f} (over events)",
        ),
    ]
    cut = f", pT >= {stats['pt_min']} GeV" if stats.get("pt_min") else ""
    for key, name in (
        ("perfect", "perfect"),
        ("double_majority", "double majority"),
        ("lhc", "LHC"),
        ("fake_rate", "fake rate"),
        ("duplicate_rate", "duplicate rate"),
    ):
        rows.append((f"{name} ({stats['definition']}{cut})", _fraction(stats[key])))
    headline = stats.get("efficiencies", {}).get("gnn_tracking_pt0.9")
    if headline is not None:
        rows.append(
            (
                "perfect / DM / fake (gnn_tracking, pT >= 0.9 GeV)",
                f"{_fraction(headline['perfect'])} / {_fraction(headline['double_majority'])}"
                f" / {_fraction(headline['fake_rate'])}",
            )
        )
    lines = ["| quantity | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    regression = stats["regression"]
    lines += ["", "| parameter | MSE | RMSE |", "|---|---|---|"]
    lines += [
        f"| {name} | {regression['mse'][name]:.4g} | {regression['rmse'][name]:.4g} |"
        for name in regression["mse"]
    ]
    return "\n".join(lines)


def build_performance_parser() -> argparse.ArgumentParser:
    """test.py's options (without --display_event) plus the timing options."""
    return build_arg_parser(PerformanceConfig, ("display_event",), __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv, build_performance_parser(), PerformanceConfig)
    if config.output_dir is None:
        config.output_dir = str(Path(config.model_name).with_suffix("")) + "_performance"
    check_writable_dir(config.output_dir, "--output_dir")
    if config.output:
        check_writable_file(config.output, "--output")
    announce_config(config)
    stats = performance_stats(config)
    table = markdown_table(stats)
    print(table, flush=True)
    out_dir = Path(config.output_dir)
    write_json(stats, out_dir / "performance.json")
    (out_dir / "performance.md").write_text(table + "\n")
    if config.output:
        write_json(stats, config.output)
    print(f"wrote {out_dir / 'performance.json'} and {out_dir / 'performance.md'}")
    return stats


if __name__ == "__main__":
    run_cli(main)
