"""Hungarian matching of queries to particles and the MaskFormer losses (hepattn's recipe).

Costs and losses share three terms, weighted as hepattn's TrackML tracker does by
default (``LossWeights``: object BCE 0.1, mask focal 50, mask dice 2):

* object BCE of the query's track-exists logit (target 1 for a matched query, 0 else);
* sigmoid focal loss (alpha 0.25, gamma 2) of the query's mask logits against the
  particle's hits, averaged over the event's real hits;
* dice loss 1 - (2 |m . t| + 1) / (|m| + |t| + 1) of the mask probabilities m.

Matching runs for every decoder layer (auxiliary losses) and every event at once: one
cost tensor [L, B, Q, P] is built on the device and copied to the host in one transfer,
then scipy's ``linear_sum_assignment`` solves each (layer, event) problem over that
event's real particles. This copy is the training step's one host sync (hepattn matches
on the CPU too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms, in the costs and in the losses."""

    object_bce: float = 0.1
    mask_focal: float = 50.0
    mask_dice: float = 2.0


def _focal_terms(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per-element focal loss if the target were 1 (pos) or 0 (neg); same shape as logits."""
    prob = torch.sigmoid(logits)
    pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * F.softplus(-logits)
    neg = (1 - FOCAL_ALPHA) * prob**FOCAL_GAMMA * F.softplus(logits)
    return pos, neg


def pairwise_costs(
    class_logits: Tensor,
    mask_logits: Tensor,
    targets: Tensor,
    hit_valid: Tensor,
    weights: LossWeights,
) -> Tensor:
    """Matching cost of every (query, particle) pair, for every layer and event.

    Args:
        class_logits: [L, B, Q] track-exists logits.
        mask_logits: [L, B, Q, N] hit-assignment logits.
        targets: [B, P, N] float 0/1, particle p's hits (a row of zeros: no particle).
        hit_valid: [B, N] bool, real (non-padding) hits.
        weights: the three terms' weights.

    Returns:
        [L, B, Q, P] float32 cost (lower is better).
    """
    logits = mask_logits.float()
    valid = hit_valid.float()[None, :, None, :]  # [1, B, 1, N]
    n_hits = hit_valid.sum(-1).clamp(min=1).float()[None, :, None, None]
    pos, neg = _focal_terms(logits)
    pos, neg = pos * valid, neg * valid
    # focal(q, p) = sum_n pos[q, n] t[p, n] + neg[q, n] (1 - t[p, n])
    focal = (
        torch.einsum("lbqn,bpn->lbqp", pos - neg, targets) + neg.sum(-1, keepdim=True)
    ) / n_hits
    prob = torch.sigmoid(logits) * valid
    overlap = torch.einsum("lbqn,bpn->lbqp", prob, targets)
    dice = 1 - (2 * overlap + 1) / (prob.sum(-1)[..., None] + targets.sum(-1)[None, :, None] + 1)
    exists = F.softplus(-class_logits.float())[..., None]  # BCE with target 1
    return weights.object_bce * exists + weights.mask_focal * focal + weights.mask_dice * dice


def match(costs: Tensor, n_particles: Tensor) -> tuple[np.ndarray, ...]:
    """Hungarian assignment of queries to the real particles of each (layer, event).

    Args:
        costs: [L, B, Q, P] (any device); Q >= P.
        n_particles: [B] int, real particles of each event (they are columns 0..n-1).

    Returns:
        (layer, event, query, particle) int64 index arrays of every matched pair.
    """
    host = costs.detach().to("cpu", torch.float64).numpy()
    counts = n_particles.detach().cpu().numpy()
    n_layers, n_events = host.shape[:2]
    out: list[list[np.ndarray]] = [[], [], [], []]
    for layer in range(n_layers):
        for event in range(n_events):
            n = int(counts[event])
            if n == 0:
                continue
            rows, cols = linear_sum_assignment(host[layer, event, :, :n])
            for column, values in zip(
                out, (np.full(n, layer), np.full(n, event), rows, cols), strict=True
            ):
                column.append(values)
    if not out[0]:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    return tuple(np.concatenate(column).astype(np.int64) for column in out)


def particle_targets(slot: Tensor, hit_valid: Tensor, n_slots: int) -> tuple[Tensor, Tensor]:
    """Per-particle hit masks from each hit's particle slot.

    Args:
        slot: [B, N] int, the hit's particle's index within its event (0..P-1), -1 for
            a hit of no target particle (noise, cut particles) and at padding.
        hit_valid: [B, N] bool.
        n_slots: P, the particle dimension (the number of queries: an upper bound).

    Returns:
        targets [B, P, N] float 0/1 and n_particles [B] (1 + the largest slot).
    """
    slot = torch.where(hit_valid, slot, torch.full_like(slot, -1))
    ids = torch.arange(n_slots, device=slot.device)
    targets = (slot[:, None, :] == ids[None, :, None]).float()
    return targets, slot.max(dim=-1).values.clamp(min=-1) + 1


def tracker_loss(
    outputs: dict[str, Tensor],
    slot: Tensor,
    hit_valid: Tensor,
    weights: LossWeights = LossWeights(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """The summed loss of every decoder layer (auxiliary losses) after matching.

    Args:
        outputs: MaskFormerTracker's ``class_logits`` [L, B, Q], ``mask_logits`` [L, B, Q, N].
        slot, hit_valid: see ``particle_targets``.
        weights: term weights.

    Returns:
        (loss, parts): the 0-d loss, summed over layers, each layer's terms averaged over
        events (object BCE over all queries, mask terms over matched queries); parts holds
        the last layer's three terms, detached.
    """
    class_logits, mask_logits = outputs["class_logits"], outputs["mask_logits"]
    n_layers, _, n_queries = class_logits.shape
    targets, n_particles = particle_targets(slot, hit_valid, n_queries)
    costs = pairwise_costs(class_logits, mask_logits, targets, hit_valid, weights)
    layer, event, query, particle = (
        torch.from_numpy(a).to(slot.device) for a in match(costs, n_particles)
    )
    exists = torch.zeros_like(class_logits, dtype=torch.float32)
    exists[layer, event, query] = 1.0
    object_bce = F.binary_cross_entropy_with_logits(
        class_logits.float(), exists, reduction="none"
    ).mean(dim=(1, 2))  # [L]
    logits = mask_logits[layer, event, query].float()  # [M, N]
    target = targets[event, particle]  # [M, N]
    valid = hit_valid[event].float()
    pos, neg = _focal_terms(logits)
    focal = ((pos * target + neg * (1 - target)) * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    dice = 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)
    n_matched = torch.bincount(layer, minlength=n_layers).clamp(min=1).float()
    focal_per_layer = torch.zeros(n_layers, device=slot.device).index_add(0, layer, focal)
    dice_per_layer = torch.zeros(n_layers, device=slot.device).index_add(0, layer, dice)
    focal_per_layer, dice_per_layer = focal_per_layer / n_matched, dice_per_layer / n_matched
    per_layer = (
        weights.object_bce * object_bce
        + weights.mask_focal * focal_per_layer
        + weights.mask_dice * dice_per_layer
    )
    parts = {
        "object_bce": object_bce[-1].detach(),
        "mask_focal": focal_per_layer[-1].detach(),
        "mask_dice": dice_per_layer[-1].detach(),
    }
    return per_layer.sum(), parts
