"""Evaluate the hit filter + tracker chain: ``python -m tracker.evaluate``.

Per event (one at a time, so the times are per event): the filter scores every hit of
the chosen volumes, hits with probability >= ``--filter_threshold`` go to the tracker
(with ``--phi_sectors`` S > 1 the chain runs on each of S azimuth sectors of an event,
widened by ``--sector_overlap``, and each hit keeps its home sector's label),
``tracker.metrics.decode_tracks`` gives each kept hit its track (filtered-out hits are
unassigned, label -1). Scores, side by side:

* the project's: TrackML score (``evaluation.scoring.score_event``, mean over events);
  perfect / double-majority / LHC efficiencies, fake and duplicate rates
  (``evaluation.efficiencies``, gnn_tracking definition at pT >= 0.9 and 1.0 GeV within
  the run's |eta| cut, and the published trackformers definition without cuts);
* hepattn's, on the overlapping masks (``tracker.metrics.hepattn_counts``);
* the hit filter's efficiency and purity; time per event of the filter, the tracker and
  the decoding (no matching at inference), CUDA-synchronised on a GPU.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from checkpoint import load_checkpoint
from custom_encoder import AttentionLayout
from data_processing.errors import UserError, run_cli
from evaluation.efficiencies import MatchSettings, efficiencies
from evaluation.options import announce_config, check_writable_file
from evaluation.pipeline import report_and_write
from evaluation.scoring import score_per_event
from tracker.config import TrackerConfig, config_from_args
from tracker.data import HitSet, SectorSplit, read_hit_set, split_sectors
from tracker.metrics import decode_tracks, filter_counts, hepattn_counts, hepattn_rates
from tracker.model import HitFilter, MaskFormerTracker, load_trained
from tracker.train import split_hit_sets
from training_steps import resolve_device

PT_THRESHOLDS = (0.9, 1.0)


def load_models(
    config: TrackerConfig, device: torch.device
) -> tuple[HitFilter | None, MaskFormerTracker]:
    """The best weights of the filter (None with ``--ideal_filter``) and the tracker."""
    tracker = load_trained(MaskFormerTracker, config.tracker_model, device)
    if config.ideal_filter:
        return None, tracker
    return load_trained(HitFilter, config.filter_model, device), tracker


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _layout(n_hits: int, device: torch.device) -> AttentionLayout:
    return AttentionLayout(pad_mask=torch.zeros(1, n_hits, dtype=torch.bool, device=device))


@torch.no_grad()
def reconstruct(
    hit_filter: HitFilter | None,
    tracker: MaskFormerTracker,
    hits: HitSet,
    threshold: float,
    device: torch.device,
) -> dict[str, Any]:
    """Run the chain over every event of ``hits``.

    Returns ``track_id`` [T] int64 (-1 unassigned), ``kept`` [T] bool, the pooled
    ``hepattn`` counts and per-event ``filter_s``, ``tracker_s``, ``decode_s`` lists.
    """
    track_id = np.full(len(hits.slot), -1, dtype=np.int64)
    kept = np.zeros(len(hits.slot), dtype=bool)
    counts: dict[str, int] = {}
    times: dict[str, list[float]] = {"filter_s": [], "tracker_s": [], "decode_s": []}
    features = torch.from_numpy(hits.features).to(device)
    for e in range(hits.n_events):
        lo, hi = int(hits.offsets[e]), int(hits.offsets[e + 1])
        x = features[lo:hi][None]
        tick = _clock(device)
        if hit_filter is None:
            keep = torch.from_numpy(hits.label[lo:hi]).to(device)
        else:
            keep = torch.sigmoid(hit_filter(x, _layout(hi - lo, device))[0].float()) >= threshold
        rows = torch.nonzero(keep).squeeze(-1)
        tock = _clock(device)
        out = tracker(x[:, rows], _layout(len(rows), device))
        class_logits, mask_logits = out["class_logits"][-1, 0], out["mask_logits"][-1, 0]
        tuck = _clock(device)
        labels = decode_tracks(class_logits, mask_logits)
        rows_host, labels_host = rows.cpu().numpy(), labels.cpu().numpy()
        done = _clock(device)
        times["filter_s"].append(tock - tick)
        times["tracker_s"].append(tuck - tock)
        times["decode_s"].append(done - tuck)
        kept[lo + rows_host] = True
        # Labels unique over the whole set: event position * queries + query.
        assigned = labels_host >= 0
        track_id[lo + rows_host[assigned]] = e * len(class_logits) + labels_host[assigned]
        slot = torch.from_numpy(hits.slot[lo:hi][rows_host]).to(device)
        for key, value in hepattn_counts(class_logits, mask_logits, slot).items():
            counts[key] = counts.get(key, 0) + value
    return {"track_id": track_id, "kept": kept, "hepattn": counts, **times}


def score(hits: HitSet, result: dict[str, Any], eta_max: float) -> dict[str, Any]:
    """The metrics of module doc from ``reconstruct``'s result."""
    truth = hits.truth_frame().merge(hits.particles, on=["event_id", "particle_id"], how="left")
    submission = pd.DataFrame(
        {"event_id": truth["event_id"], "hit_id": truth["hit_id"], "track_id": result["track_id"]}
    )
    scores = score_per_event(truth, submission).to_numpy()
    metrics: dict[str, Any] = {"n_events": hits.n_events, "trackml_score": float(np.mean(scores))}
    for pt_min in PT_THRESHOLDS:
        eff = efficiencies(
            truth,
            submission,
            settings=MatchSettings("gnn_tracking", pt_min=pt_min, eta_max=eta_max),
        )
        for key in (
            "perfect",
            "double_majority",
            "lhc",
            "fake_rate",
            "duplicate_rate",
            "n_particles",
        ):
            metrics[f"gnn_pt{pt_min:g}_{key}"] = eff[key]
    published = efficiencies(truth[["event_id", "hit_id", "particle_id"]], submission)
    for key in ("perfect", "double_majority", "lhc"):
        metrics[f"trackformers_{key}"] = published[key]
    metrics.update(hepattn_rates(result["hepattn"]))
    metrics.update(filter_counts(result["kept"], hits.label))
    for key in ("filter_s", "tracker_s", "decode_s"):
        metrics[f"{key[:-2]}_ms_per_event"] = 1000 * float(np.mean(result[key][1:] or result[key]))
    return metrics


def merge_sectors(result: dict[str, Any], split: SectorSplit, n_hits: int) -> dict[str, Any]:
    """``reconstruct``'s result on ``split.sectors`` as a result on the original events:
    every hit takes its home sector's track label and filter decision (track ids stay
    unique: sector-event position * queries + query); times are summed per event.
    hepattn's counts stay pooled over the sector events (a particle in two sectors'
    overlap counts in both)."""
    track_id = np.full(n_hits, -1, dtype=np.int64)
    kept = np.zeros(n_hits, dtype=bool)
    home_rows = split.rows[split.home]
    track_id[home_rows] = result["track_id"][split.home]
    kept[home_rows] = result["kept"][split.home]
    merged = {"track_id": track_id, "kept": kept, "hepattn": result["hepattn"]}
    for key in ("filter_s", "tracker_s", "decode_s"):
        per_sector = np.asarray(result[key]).reshape(-1, split.n_sectors)
        merged[key] = per_sector.sum(axis=1).tolist()
    return merged


def evaluate(config: TrackerConfig, hits: HitSet | None = None) -> dict[str, Any]:
    """Evaluate the checkpoints of ``config`` on ``hits`` (default: its split of data_dir)."""
    device = resolve_device(config.device)
    hit_filter, tracker = load_models(config, device)
    if hits is None:
        all_hits = read_hit_set(config.data_dir, config.cuts, config.max_events)
        if config.split == "all":
            hits = all_hits
        else:
            # The split the tracker was trained with (its checkpoint's seed), not --seed.
            seed = load_checkpoint(config.tracker_model)["data"]["split_seed"]
            parts = split_hit_sets(replace(config, seed=seed), all_hits)
            hits = parts[("train", "val", "test").index(config.split)]
    if hits.n_events == 0:
        raise UserError(f"{config.data_dir}: no events to evaluate")
    if config.phi_sectors > 1:  # the chain on each sector, the labels merged back
        split = split_sectors(hits, config.phi_sectors, config.sector_overlap, config.min_hits)
        result = reconstruct(hit_filter, tracker, split.sectors, config.filter_threshold, device)
        result = merge_sectors(result, split, len(hits.slot))
    else:
        result = reconstruct(hit_filter, tracker, hits, config.filter_threshold, device)
    return score(hits, result, config.eta_max)


def format_metrics(metrics: dict[str, Any]) -> str:
    return "  ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv, "Evaluate the hit filter + MaskFormer tracker chain.")
    if config.output is not None:
        check_writable_file(config.output, "--output")
    announce_config(config)
    return report_and_write(evaluate(config), config.output, lambda m: print(format_metrics(m)))


if __name__ == "__main__":
    run_cli(main)
