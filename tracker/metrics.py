"""From the tracker's outputs to tracks, and hepattn's metrics on its overlapping masks.

``decode_tracks`` turns one event's query outputs into one track label per hit, which the
project's scoring (``evaluation.scoring``, ``evaluation.efficiencies``) takes. hepattn
scores the masks themselves, where a hit may sit in several tracks;
``hepattn_counts`` computes its definitions on them: a track counts when its existence
probability is >= 0.5 and its mask holds >= 3 hits; it matches a particle when more than
half of its hits are the particle's (precision) and it holds more than half of the
particle's hits (recall), counted over the tracker's input hits; a fake is a counted
track that matches no particle (a duplicate, a second match of an already matched
particle, is no fake). ``filter_counts``: the hit filter's efficiency and purity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

EXISTS_THRESHOLD = 0.5
MIN_TRACK_HITS = 3


def decode_tracks(
    class_logits: Tensor, mask_logits: Tensor, min_hits: int = MIN_TRACK_HITS
) -> Tensor:
    """One event's track label per hit.

    Args:
        class_logits: [Q] track-exists logits; mask_logits: [Q, N] hit logits.
        min_hits: tracks with fewer hits are dropped.

    Returns:
        [N] int64: the query index of the counted track (probability >= 0.5) whose mask
        logit of the hit is highest, if that logit is > 0 (probability > 0.5); -1 for a
        hit in no counted track or in a track left with fewer than ``min_hits`` hits.
    """
    exists = torch.sigmoid(class_logits.float()) >= EXISTS_THRESHOLD
    logits = mask_logits.float().masked_fill(~exists[:, None], float("-inf"))
    best, query = logits.max(dim=0)
    label = torch.where(best > 0, query, torch.full_like(query, -1))
    counts = torch.bincount(label.clamp(min=0), weights=(label >= 0).float(), minlength=len(exists))
    return torch.where((label >= 0) & (counts[label.clamp(min=0)] >= min_hits), label, -1)


def hepattn_counts(class_logits: Tensor, mask_logits: Tensor, slot: Tensor) -> dict[str, int]:
    """hepattn's track counts for one event (see module doc); pool them over events.

    Args:
        class_logits [Q], mask_logits [Q, N] of the tracker; slot [N] int target-particle
        index of each input hit (-1: none).

    Returns:
        n_particles (targets with >= 1 input hit), n_matched_particles, n_tracks (counted
        tracks), n_matched_tracks, n_duplicate_tracks, n_fake_tracks.
    """
    mask = mask_logits.float() > 0  # sigmoid >= 0.5 on each hit
    counted = (torch.sigmoid(class_logits.float()) >= EXISTS_THRESHOLD) & (
        mask.sum(-1) >= MIN_TRACK_HITS
    )
    n_slots = int(slot.max()) + 1 if len(slot) else 0
    targets = slot[None, :] == torch.arange(n_slots, device=slot.device)[:, None]  # [P, N]
    overlap = mask[counted].float() @ targets.float().T  # [T, P]
    precision = overlap / mask[counted].sum(-1, keepdim=True).clamp(min=1)
    recall = overlap / targets.sum(-1)[None, :].clamp(min=1)
    matched = (precision > 0.5) & (recall > 0.5)  # a track matches at most one particle
    track_matched = matched.any(dim=1)
    per_particle = matched.sum(dim=0)
    n_matched_tracks = int(track_matched.sum())
    n_matched_particles = int((per_particle > 0).sum())
    return {
        "n_particles": int((targets.sum(-1) > 0).sum()),
        "n_matched_particles": n_matched_particles,
        "n_tracks": int(counted.sum()),
        "n_matched_tracks": n_matched_tracks,
        "n_duplicate_tracks": n_matched_tracks - n_matched_particles,
        "n_fake_tracks": int((~track_matched).sum()),
    }


def hepattn_rates(counts: dict[str, int]) -> dict[str, float]:
    """Efficiency, fake and duplicate rates from pooled ``hepattn_counts``."""

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "hepattn_efficiency": ratio(counts["n_matched_particles"], counts["n_particles"]),
        "hepattn_fake_rate": ratio(counts["n_fake_tracks"], counts["n_tracks"]),
        "hepattn_duplicate_rate": ratio(counts["n_duplicate_tracks"], counts["n_tracks"]),
    }


def filter_counts(kept: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Hit-filter efficiency (kept target hits / target hits) and purity (/ kept hits)."""
    true_kept = int((kept & label).sum())
    return {
        "filter_efficiency": true_kept / max(1, int(label.sum())),
        "filter_purity": true_kept / max(1, int(kept.sum())),
        "filter_kept_fraction": float(kept.mean()) if len(kept) else float("nan"),
    }
