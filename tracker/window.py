"""Sliding-window attention in azimuth at O(N W) cost, on the project's encoder layers.

``custom_encoder.Encoder`` with ``attention_window`` builds a dense [N, N] mask, which
costs N^2 memory: 3 * 10^9 entries for a full event's 55,000 pixel hits. Here the hits of
one event are put in phi order on a ring and cut into blocks of W (the window); each
block's hits are the queries of a context of three blocks (its neighbours on both sides,
wrapping at +-pi), in which query a may attend key c when |a - c| <= W. That is exactly
the encoder's window rule (a hit attends to the hits within W ranks of it on each side,
circularly), computed by the same ``EncoderLayer`` modules with the same weights:
attention costs 3 W^2 per block instead of N^2 per event, and the per-hit sublayers
(feed-forward, norms) run three times per hit, on the copies in the neighbouring
contexts, whose outputs are dropped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from custom_encoder import AttentionLayout, Encoder


def windowed_encode(encoder: Encoder, x: Tensor, phi: Tensor, window: int) -> Tensor:
    """Run ``encoder``'s layers over one event with a circular window in phi.

    Args:
        encoder: a ``custom_encoder.Encoder`` built without registers, value residual and
            window (its layers are used; the window comes from ``window``).
        x: [N, D] hit embeddings of one event (no padding).
        phi: [N] azimuth of every hit (radians).
        window: W >= 1, neighbours per side in phi order.

    Returns:
        [N, D], equal (to rounding) to ``encoder`` with ``attention_window=W`` on x.
    """
    options = encoder.options
    if options.n_registers or options.value_residual or options.attention_window:
        raise ValueError(
            "windowed_encode needs an encoder without registers, value residual and built-in window"
        )
    n_hits = len(x)
    if n_hits <= 2 * window + 1:  # every pair is within the window: full attention
        layout = AttentionLayout(pad_mask=torch.zeros(1, n_hits, dtype=torch.bool, device=x.device))
        hidden = x[None]
        for layer in encoder.layers:
            hidden, _ = layer(hidden, layout)
        return encoder.final_norm(hidden[0])
    order = torch.argsort(phi, stable=True)
    n_blocks = -(-n_hits // window)
    span = torch.arange(3 * window, device=x.device)
    # Context of block i: ring positions i W - W ... i W + 2 W - 1 (mod N).
    context = (torch.arange(n_blocks, device=x.device)[:, None] * window - window + span) % n_hits
    allowed = (span[:, None] - span[None, :]).abs() <= window
    layout = AttentionLayout(
        pad_mask=torch.zeros(n_blocks, 3 * window, dtype=torch.bool, device=x.device),
        attn_mask=allowed.expand(n_blocks, -1, -1),
    )
    hidden = x[order]
    for layer in encoder.layers:
        out, _ = layer(hidden[context], layout)
        hidden = out[:, window : 2 * window].reshape(n_blocks * window, -1)[:n_hits]
    result = torch.empty_like(hidden)
    result[order] = hidden
    return encoder.final_norm(result)


def encode_events(
    encoder: Encoder, x: Tensor, layout: AttentionLayout, phi: Tensor, window: int
) -> Tensor:
    """``windowed_encode`` for every event of a padded batch.

    x [B, N, D], phi [B, N], layout padded -> [B, N, D] (zeros at padding). Reads each
    event's size from the device once (one sync per batch).
    """
    sizes = (~layout.pad_mask).sum(dim=1).tolist()
    out = torch.zeros_like(x)
    for b, size in enumerate(sizes):
        # Padding sits after the real hits in the project's padded batches.
        out[b, :size] = windowed_encode(encoder, x[b, :size], phi[b, :size], window)
    return out
