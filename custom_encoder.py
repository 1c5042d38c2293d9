"""Transformer encoder layer with pluggable attention.

One encoder layer class serves every attention backend, so a state dict trained with one
backend loads into any other:

* ``math``: the plain reference computation, softmax(QK^T / sqrt(d)) V with the padding
  keys set to -inf. Slow but obviously correct; the yardstick for the other backends.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with a key-padding mask,
  on padded batches.

Hits are an unordered set, so there is no positional encoding anywhere. Padding never
influences a real hit: padded keys are masked out of every softmax, and the per-hit
feed-forward and norms act on each position alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_BACKENDS = ("math", "sdpa")


@dataclass
class AttentionLayout:
    """How the hits of a batch are laid out in memory.

    Padded layout: activations are ``[B, N, D]`` and ``pad_mask`` is ``[B, N]`` bool,
    True where the position is padding.
    """

    pad_mask: Tensor


def _math_attention(q: Tensor, k: Tensor, v: Tensor, key_pad: Tensor, dropout_p: float) -> Tensor:
    """Reference attention. q, k, v: [B, H, N, Dh]; key_pad: [B, N] True = padding."""
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


def _sdpa_attention(q: Tensor, k: Tensor, v: Tensor, key_pad: Tensor, dropout_p: float) -> Tensor:
    """torch SDPA with a boolean mask (True = may attend). q, k, v: [B, H, N, Dh]."""
    allowed = ~key_pad[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the hits of each event.

    Args:
        d_model: embedding size D.
        n_heads: number of heads H; D must be divisible by H.
        dropout: dropout on the attention weights (training only).
        backend: one of ``ATTENTION_BACKENDS``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"embedding size {d_model} is not divisible by {n_heads} heads")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; use {ATTENTION_BACKENDS}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.backend = backend
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        batch, n_hits, d_model = x.shape
        head_dim = d_model // self.n_heads
        qkv = self.qkv(x).view(batch, n_hits, 3, self.n_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        dropout_p = self.dropout if self.training else 0.0
        attend = _math_attention if self.backend == "math" else _sdpa_attention
        out = attend(q, k, v, layout.pad_mask, dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, n_hits, d_model))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward block with residuals and LayerNorm.

    ``norm_first=False`` is the post-norm layer of the published model (PyTorch's
    ``nn.TransformerEncoderLayer`` default, ReLU feed-forward); ``norm_first=True`` is
    pre-norm, which trains more stably for deep stacks.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float,
        norm_first: bool,
        backend: str,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadSelfAttention(d_model, n_heads, dropout, backend)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _attention_block(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        return self.dropout(self.self_attn(x, layout))

    def _feedforward_block(self, x: Tensor) -> Tensor:
        return self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        if self.norm_first:
            x = x + self._attention_block(self.norm1(x), layout)
            return x + self._feedforward_block(self.norm2(x))
        x = self.norm1(x + self._attention_block(x, layout))
        return self.norm2(x + self._feedforward_block(x))


class Encoder(nn.Module):
    """A stack of ``n_layers`` identical encoder layers (plus a final norm for pre-norm)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim_feedforward: int,
        n_layers: int,
        dropout: float,
        norm_first: bool,
        backend: str,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, dim_feedforward, dropout, norm_first, backend)
            for _ in range(n_layers)
        )
        # Pre-norm leaves the residual stream un-normalised; post-norm already ends in a norm.
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        for layer in self.layers:
            x = layer(x, layout)
        return self.final_norm(x)
