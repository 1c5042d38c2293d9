"""The two networks of the tracker family: a per-hit filter and a MaskFormer tracker.

Both read the hit features of ``tracker.data.FEATURES`` ([..., 8]: x, y, z, r (mm), eta,
phi (rad), u = x / r^2, v = y / r^2 (1/mm)) raw, and standardise them inside with the
training split's statistics stored in their config, so that the raw phi (feature 5)
is at hand for the encoder's azimuth window. The hit encoders are the project's
``custom_encoder.Encoder`` layers (hybrid norm, SwiGLU) with a sliding window in phi with
wrap-around (``tracker.window``, O(N W)).

* ``HitFilter``: encoder + linear head -> one logit per hit ("hit of a target particle").
* ``MaskFormerTracker``: encoder over the kept hits; a decoder of learned object queries,
  each layer cross-attention from the queries to the hits (mask attention: a query sees
  only the hits its previous mask keeps), query self-attention and a feed-forward;
  heads after the initial queries and after every decoder layer: track-exists logit and
  mask logits (MLP(query) . hit embedding).

Padded layout only ([B, N, F] with ``AttentionLayout.pad_mask``): the decoder's masks
are [B, Q, N].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from checkpoint import load_checkpoint
from custom_encoder import AttentionLayout, Encoder, EncoderOptions, swiglu_hidden
from tracker.window import encode_events

N_FEATURES = 8
ETA_FEATURE, PHI_FEATURE = 4, 5


class _Standardise(nn.Module):
    """(x - mean) / std with the training split's feature statistics (buffers)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class AnglePositionalEncoding(nn.Module):
    """Fourier features of a hit's azimuth and pseudorapidity: [..., 8] raw -> [..., 4 F].

    cos / sin of k phi for k = 1, 2, 4, ..., 2^(F-1) (integers: periodic in phi) and of
    w eta for w = pi/4 * (1, 2, ..., 2^(F-1)). Why: hits of one track lie close in phi and
    eta, and a dot product of two such vectors is sum_k cos(k dphi) + sum_w cos(w deta),
    a kernel peaked at dphi = deta = 0 that one attention head can read directly, where
    the standardised raw angles offer only products phi_a phi_b.
    """

    def __init__(self, n_frequencies: int) -> None:
        super().__init__()
        powers = 2.0 ** torch.arange(n_frequencies, dtype=torch.float32)
        self.register_buffer("phi_frequencies", powers, persistent=False)
        self.register_buffer("eta_frequencies", powers * (torch.pi / 4), persistent=False)

    @property
    def n_outputs(self) -> int:
        return 4 * len(self.phi_frequencies)

    def forward(self, x: Tensor) -> Tensor:
        phi = x[..., PHI_FEATURE, None] * self.phi_frequencies
        eta = x[..., ETA_FEATURE, None] * self.eta_frequencies
        return torch.cat([phi.cos(), phi.sin(), eta.cos(), eta.sin()], dim=-1)


class HitEmbedding(nn.Module):
    """Raw hit features [..., 8] -> embeddings [..., D]: standardised features (the
    training split's statistics) and, with ``n_frequencies`` > 0, the angles' Fourier
    features (``AnglePositionalEncoding``), through one linear layer."""

    def __init__(
        self, d_model: int, mean: tuple[float, ...], std: tuple[float, ...], n_frequencies: int
    ) -> None:
        super().__init__()
        self.standardise = _Standardise(mean, std)
        self.positional = AnglePositionalEncoding(n_frequencies) if n_frequencies else None
        extra = self.positional.n_outputs if self.positional is not None else 0
        self.input_proj = nn.Linear(N_FEATURES + extra, d_model)

    def forward(self, x: Tensor) -> Tensor:
        features = self.standardise(x)
        if self.positional is not None:
            features = torch.cat([features, self.positional(x)], dim=-1)
        return self.input_proj(features)


@dataclass
class EncoderSettings:
    """One hit encoder: width, depth, heads, feed-forward width, azimuth window."""

    d_model: int = 32
    n_layers: int = 4
    n_heads: int = 4
    dim_feedforward: int = 96
    attention_window: int = 64  # neighbours per side in phi order; 0: full attention
    dropout: float = 0.0
    # Fourier features of phi and eta per hit (AnglePositionalEncoding); 0: none.
    positional_frequencies: int = 0

    def build(self) -> Encoder:
        return Encoder(
            d_model=self.d_model,
            n_heads=self.n_heads,
            dim_feedforward=self.dim_feedforward,
            n_layers=self.n_layers,
            dropout=self.dropout,
            backend="sdpa",
            # The window is applied by ``encode`` (tracker.window: O(N W)), not by the
            # encoder's own dense [N, N] mask.
            options=EncoderOptions(norm="hybrid", feedforward="swiglu"),
        )

    def encode(self, encoder: Encoder, x: Tensor, layout: AttentionLayout, phi: Tensor) -> Tensor:
        """x [B, N, D] -> [B, N, D]: ``encoder`` with this setting's azimuth window."""
        if self.attention_window > 0:
            return encode_events(encoder, x, layout, phi, self.attention_window)
        return encoder(x, layout)


@dataclass
class FilterModelConfig:
    """Everything that rebuilds a HitFilter (stored in its checkpoint)."""

    encoder: EncoderSettings
    feature_mean: tuple[float, ...] = (0.0,) * N_FEATURES
    feature_std: tuple[float, ...] = (1.0,) * N_FEATURES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FilterModelConfig:
        values = dict(values)
        values["encoder"] = EncoderSettings(**values["encoder"])
        return cls(**values)


@dataclass
class TrackerModelConfig:
    """Everything that rebuilds a MaskFormerTracker (stored in its checkpoint)."""

    encoder: EncoderSettings
    n_queries: int = 200
    n_decoder_layers: int = 4
    feature_mean: tuple[float, ...] = (0.0,) * N_FEATURES
    feature_std: tuple[float, ...] = (1.0,) * N_FEATURES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrackerModelConfig:
        values = dict(values)
        values["encoder"] = EncoderSettings(**values["encoder"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class HitFilter(nn.Module):
    """Per-hit logit of "this hit belongs to a target particle" (BCE target)."""

    def __init__(self, config: FilterModelConfig) -> None:
        super().__init__()
        self.config = config
        d_model = config.encoder.d_model
        self.embed = HitEmbedding(
            d_model,
            config.feature_mean,
            config.feature_std,
            config.encoder.positional_frequencies,
        )
        self.encoder = config.encoder.build()
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """x: raw features [B, N, 8] -> logits [B, N] (meaningless at padding)."""
        embedded = self.embed(x)
        hidden = self.config.encoder.encode(self.encoder, embedded, layout, x[..., PHI_FEATURE])
        return self.head(hidden).squeeze(-1)


class QueryAttention(nn.Module):
    """Multi-head attention from queries [B, Q, D] to keys [B, K, D] under a boolean mask
    ``allowed`` [B, Q, K] (True: may attend)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, queries: Tensor, keys: Tensor, allowed: Tensor | None) -> Tensor:
        batch, n_q, d_model = queries.shape
        head_dim = d_model // self.n_heads

        def heads(t: Tensor) -> Tensor:  # [B, L, D] -> [B, H, L, Dh]
            return t.view(batch, -1, self.n_heads, head_dim).transpose(1, 2)

        k, v = self.kv_proj(keys).chunk(2, dim=-1)
        mask = None if allowed is None else allowed[:, None]
        out = F.scaled_dot_product_attention(
            heads(self.q_proj(queries)), heads(k), heads(v), attn_mask=mask
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, n_q, d_model))


class DecoderLayer(nn.Module):
    """Masked cross-attention to the hits, query self-attention, SwiGLU feed-forward;
    each a pre-norm residual branch."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int) -> None:
        super().__init__()
        self.cross = QueryAttention(d_model, n_heads)
        self.self_attn = QueryAttention(d_model, n_heads)
        hidden = swiglu_hidden(dim_feedforward)
        self.linear1 = nn.Linear(d_model, 2 * hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))

    def forward(self, queries: Tensor, hits: Tensor, allowed: Tensor) -> Tensor:
        """queries [B, Q, D], hits [B, N, D], allowed [B, Q, N] -> queries [B, Q, D]."""
        queries = queries + self.cross(self.norms[0](queries), hits, allowed)
        normed = self.norms[1](queries)
        queries = queries + self.self_attn(normed, normed, None)
        gate, value = self.linear1(self.norms[2](queries)).chunk(2, dim=-1)
        return queries + self.linear2(F.silu(gate) * value)


class MaskFormerTracker(nn.Module):
    """Learned object queries that each claim one track's hits (see module doc)."""

    def __init__(self, config: TrackerModelConfig) -> None:
        super().__init__()
        self.config = config
        enc = config.encoder
        d_model = enc.d_model
        self.embed = HitEmbedding(
            d_model, config.feature_mean, config.feature_std, enc.positional_frequencies
        )
        self.encoder = enc.build()
        self.queries = nn.Parameter(0.1 * torch.randn(config.n_queries, d_model))
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, enc.n_heads, enc.dim_feedforward)
            for _ in range(config.n_decoder_layers)
        )
        self.query_norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, 1)
        self.mask_mlp = nn.Sequential(
            nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.hit_proj = nn.Linear(d_model, d_model)

    def _heads(self, queries: Tensor, hit_embed: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class logits [B, Q], mask logits [B, Q, N])."""
        normed = self.query_norm(queries)
        class_logits = self.class_head(normed).squeeze(-1)
        mask_logits = torch.einsum("bqd,bnd->bqn", self.mask_mlp(normed), hit_embed)
        return class_logits, mask_logits

    def forward(self, x: Tensor, layout: AttentionLayout) -> dict[str, Tensor]:
        """x: raw features [B, N, 8] of the kept hits.

        Returns ``class_logits`` [L + 1, B, Q] and ``mask_logits`` [L + 1, B, Q, N] (L
        decoder layers; index 0 from the initial queries, the last is the prediction),
        mask logits at padding set to -inf-like (-1e4).
        """
        pad = layout.pad_mask
        embedded = self.embed(x)
        hits = self.config.encoder.encode(self.encoder, embedded, layout, x[..., PHI_FEATURE])
        hit_embed = self.hit_proj(hits)
        queries = self.queries.expand(len(x), -1, -1)
        class_all, mask_all = [], []
        for layer in [None, *self.layers]:
            if layer is not None:
                # Mask attention: a query attends to the hits its current mask keeps
                # (logit > 0); a query whose mask keeps none attends to every real hit.
                keep = (mask_all[-1] > 0) & ~pad[:, None, :]
                empty = ~keep.any(dim=-1, keepdim=True)
                allowed = keep | (empty & ~pad[:, None, :])
                queries = layer(queries, hits, allowed.detach())
            class_logits, mask_logits = self._heads(queries, hit_embed)
            class_all.append(class_logits)
            mask_all.append(mask_logits.masked_fill(pad[:, None, :], -1e4))
        return {"class_logits": torch.stack(class_all), "mask_logits": torch.stack(mask_all)}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


Trained = TypeVar("Trained", HitFilter, MaskFormerTracker)


def load_trained(
    model_class: type[Trained],
    path: str | Path,
    device: torch.device | str = "cpu",
    attention_window: int | None = None,
) -> Trained:
    """The best weights of a stage checkpoint (``tracker.train``) as a ``model_class``
    (HitFilter or MaskFormerTracker) on ``device``, in eval mode. ``attention_window``
    (hits per side) replaces the stored window: it holds no weights, so a model trained
    on sparse events can start training on denser ones with a wider window."""
    state = load_checkpoint(path, device)
    config_class = FilterModelConfig if model_class is HitFilter else TrackerModelConfig
    config = config_class.from_dict(state["model_config"])
    if attention_window is not None:
        config.encoder = replace(config.encoder, attention_window=attention_window)
    model = model_class(config)  # type: ignore[arg-type]
    model.load_state_dict(state["best_model_state_dict"])
    return model.to(device).eval()
