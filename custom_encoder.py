"""Transformer encoder with pluggable attention backends.

One encoder layer serves every attention backend, so weights trained with one backend
load into any other, and ``Encoder.set_attention`` switches a live model. What each
backend can do is written once, in ``ATTENTION_BACKEND_TABLE``, which the dispatch reads:
``math`` (softmax(QK^T / sqrt(d)) V written out; the yardstick), ``sdpa`` (torch's
``scaled_dot_product_attention``) and ``flash`` (a varlen kernel of attention_ops.py on
packed hits, bf16/fp16 on CUDA; exact SDPA wherever no kernel can run, said in one log
line).

Attention-weight dropout is off unless asked for (``attention_dropout``; residual and
feed-forward dropout are always on in training): on a CPU, SDPA with dropout leaves its
fused kernel for the unfused math path, and training ran 4x slower
(benchmarks/results_attention_defaults_cpu.md); the varlen kernels have none at all.

Layouts (``AttentionLayout``, every backend takes both): padded ``[B, N, D]`` with a
padding mask, or packed ``[T, D]`` with event boundaries; without the varlen kernel,
packed rows go through a padded scratch buffer (a block-diagonal mask over the whole
pack would grow as T^2).

Encoder variants (``EncoderOptions``; defaults: the published post-norm ReLU model):
norm placement (post / pre / HybridNorm), LayerScale, value residual, QK-norm,
GELU/SwiGLU, register tokens and local attention over a window of hits in azimuth order.
Hits are a set: no positional encoding; padding and other events never reach a hit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_ops import (
    FLASH_HEAD_DIM_MULTIPLE,
    HAS_FLEX_ATTENTION,
    VARLEN_KERNEL_DEVICES,
    VARLEN_KERNEL_DTYPES,
    VARLEN_KERNELS,
    AttentionLayout,
    VarlenKernel,
    flash_fallback_reason,
    flex_attention,
    phi_window_mask,
)
from network_options import (
    ATTENTION_BACKENDS,
    ATTENTION_WEIGHT_DROPOUT,
    EncoderOptions,
    check_attention,
)

# EncoderOptions and the choices are written in the torch-free network_options.py, so
# that a command line's --help needs no torch.
log = logging.getLogger(__name__)

# q, k, v [B, H, L, Dh], allowed [B, 1, 1 or L, L] bool (True: may attend), dropout p
PaddedAttention = Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]


def _math_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout_p: float) -> Tensor:
    """Reference attention. q, k, v: [B, H, N, Dh]; allowed: [B, 1, 1 or N, N] bool."""
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


def _sdpa_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout_p: float) -> Tensor:
    """torch SDPA with a boolean mask (True = may attend). q, k, v: [B, H, N, Dh]."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


@dataclass(frozen=True)
class AttentionBackend:
    """What one attention backend can do (a row of ``ATTENTION_BACKEND_TABLE``). Every
    backend takes both layouts of ``AttentionLayout``.

    Attributes:
        name: the ``--attention`` choice.
        padded: the attention it runs on padded activations (and on packed ones
            wherever its varlen kernel cannot run).
        attention_dropout: whether it can drop attention weights in training.
        varlen_kernel: whether it runs a ``FLASH_KERNELS`` kernel on packed hits.
        kernel_devices: device types the varlen kernel runs on.
        kernel_dtypes: dtypes the varlen kernel computes in (others are cast to the first).
        head_dim_multiple: head sizes the varlen kernel takes.
    """

    name: str
    padded: PaddedAttention
    attention_dropout: bool
    varlen_kernel: bool = False
    kernel_devices: tuple[str, ...] = ()
    kernel_dtypes: tuple[torch.dtype, ...] = ()
    head_dim_multiple: int = 1


# Which backends can drop attention weights is written once, in network_options.
ATTENTION_BACKEND_TABLE: dict[str, AttentionBackend] = {
    "math": AttentionBackend("math", _math_attention, ATTENTION_WEIGHT_DROPOUT["math"]),
    "sdpa": AttentionBackend("sdpa", _sdpa_attention, ATTENTION_WEIGHT_DROPOUT["sdpa"]),
    "flash": AttentionBackend(
        "flash",
        _sdpa_attention,  # the exact fallback
        ATTENTION_WEIGHT_DROPOUT["flash"],  # none: the varlen kernels have no dropout
        varlen_kernel=True,
        kernel_devices=VARLEN_KERNEL_DEVICES,
        kernel_dtypes=VARLEN_KERNEL_DTYPES,
        head_dim_multiple=FLASH_HEAD_DIM_MULTIPLE,
    ),
}
if tuple(ATTENTION_BACKEND_TABLE) != ATTENTION_BACKENDS:
    raise ImportError("ATTENTION_BACKEND_TABLE must have one row per ATTENTION_BACKENDS")


def attention_backend(name: str, flash_kernel: str, attention_dropout: bool) -> AttentionBackend:
    """The table row of backend ``name``; a ValueError naming what is unsupported."""
    check_attention(name, flash_kernel, attention_dropout)
    return ATTENTION_BACKEND_TABLE[name]


def residual(
    x: Tensor,
    sublayer: Callable[[Tensor], tuple[Tensor, Any]],
    norm: nn.Module | None,
    position: str,
    scale: Tensor | None = None,
) -> tuple[Tensor, Any]:
    """One residual sublayer with its norm and LayerScale.

    ``pre``: x + s * f(norm(x)); ``post``: norm(x + s * f(x)); ``none``: x + s * f(x),
    with s the LayerScale vector ``scale`` ([D]; None: 1). ``sublayer`` maps [..., D] to
    ([..., D], extra), and the extra output (the attention values) is handed back.
    """
    out, extra = sublayer(norm(x) if position == "pre" else x)
    x = x + (out if scale is None else out * scale)
    return (norm(x) if position == "post" else x), extra


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the hits of each event.

    Args:
        d_model: embedding size D.
        n_heads: number of heads H; D must be divisible by H.
        dropout: the model's dropout rate; applied to the attention weights in
            training only with ``attention_dropout``.
        backend: one of ``ATTENTION_BACKENDS`` (switchable later: ``set_backend``).
        qk_norm: LayerNorm over the head dimension of queries and keys.
        mix_values: learn a mixing weight of this layer's values with the first layer's
            (value residual; False for the first layer itself).
        flash_kernel: which varlen kernel ``flash`` uses (one of ``FLASH_KERNELS``).
        attention_dropout: drop attention weights (backends that can; see module doc).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        backend: str,
        qk_norm: bool = False,
        mix_values: bool = False,
        flash_kernel: str = "auto",
        attention_dropout: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"embedding size {d_model} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout_rate = dropout
        self.set_backend(backend, flash_kernel, attention_dropout)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # Shared by all heads, as in ViT-22B; None (no parameters) when off.
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.value_mix = nn.Parameter(torch.tensor(0.5)) if mix_values else None

    def set_backend(self, backend: str, flash_kernel: str, attention_dropout: bool) -> None:
        """Switch the attention computation; the parameters stay as they are."""
        self.spec = attention_backend(backend, flash_kernel, attention_dropout)
        self.backend = backend
        self.dropout = self.dropout_rate if attention_dropout else 0.0
        # The kernel is used whenever the activations are on a kernel device (per call).
        self.varlen_kernel: VarlenKernel | None = None
        if self.spec.varlen_kernel and self.head_dim % self.spec.head_dim_multiple == 0:
            self.varlen_kernel = VARLEN_KERNELS.get(flash_kernel, (None, None))[1]

    def _padded(self, qkv: Tensor, pad_mask: Tensor, attn_mask: Tensor | None) -> Tensor:
        """qkv: [B, N, 3D] -> attention output [B, N, D] (padded layout).

        pad_mask [B, N] True at padding; attn_mask [B, N, N] (local attention) or None.
        """
        batch, n_hits, _ = qkv.shape
        qkv = qkv.view(batch, n_hits, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        use_flex = HAS_FLEX_ATTENTION and q.is_cuda and torch.compiler.is_compiling()
        if attn_mask is not None and use_flex:
            out = flex_attention(q, k, v, attn_mask)
        else:
            allowed = ~pad_mask[:, None, None, :] if attn_mask is None else attn_mask[:, None]
            out = self.spec.padded(q, k, v, allowed, self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(batch, n_hits, self.n_heads * self.head_dim)

    def _packed_kernel(self, qkv: Tensor, layout: AttentionLayout) -> Tensor:
        """qkv: [T, 3D] -> [T, D] with the varlen FlashAttention kernel."""
        q, k, v = qkv.view(len(qkv), 3, self.n_heads, self.head_dim).unbind(1)  # [T, H, Dh]
        # Outside autocast, run the kernel in its first dtype and return the caller's.
        dtypes = self.spec.kernel_dtypes
        kernel_dtype = qkv.dtype if qkv.dtype in dtypes else dtypes[0]
        q, k, v = (t.to(kernel_dtype).contiguous() for t in (q, k, v))
        out = self.varlen_kernel(q, k, v, layout.cu_seqlens, layout.max_seqlen)
        return out.reshape(len(qkv), -1).to(qkv.dtype)

    def _packed_fallback(self, qkv: Tensor, layout: AttentionLayout) -> Tensor:
        """qkv: [T, 3D] -> [T, D] via a padded scratch buffer and the padded attention."""
        batch, max_len = layout.pad_mask.shape
        buffer = qkv.new_zeros(batch * max_len, qkv.shape[-1]).index_copy(0, layout.slots, qkv)
        out = self._padded(buffer.view(batch, max_len, -1), layout.pad_mask, layout.attn_mask)
        return out.reshape(batch * max_len, -1).index_select(0, layout.slots)

    def forward(
        self, x: Tensor, layout: AttentionLayout, first_values: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: [B, N, D] (padded) or [T, D] (packed) -> (output, values), both that shape.

        ``first_values`` are the first layer's values (value residual), mixed into this
        layer's when it has a ``value_mix`` weight. The returned values (after mixing)
        let the encoder hand the first layer's on.
        """
        qkv = self.qkv(x)
        q, k, v = qkv.chunk(3, dim=-1)  # views, each [..., D]
        if self.q_norm is not None or self.value_mix is not None:
            if self.q_norm is not None:
                heads = (*q.shape[:-1], self.n_heads, self.head_dim)
                q = self.q_norm(q.reshape(heads)).flatten(-2)
                k = self.k_norm(k.reshape(heads)).flatten(-2)
            if self.value_mix is not None and first_values is not None:
                v = torch.lerp(v, first_values, self.value_mix)
            qkv = torch.cat([q, k, v], dim=-1)
        on_kernel_device = qkv.device.type in self.spec.kernel_devices
        if not layout.is_packed:
            out = self._padded(qkv, layout.pad_mask, layout.attn_mask)
        elif self.varlen_kernel is not None and on_kernel_device and layout.attn_mask is None:
            out = self._packed_kernel(qkv, layout)
        else:
            out = self._packed_fallback(qkv, layout)
        return self.out_proj(out), v


def swiglu_hidden(dim_feedforward: int) -> int:
    """SwiGLU hidden width: 2/3 of ``dim_feedforward`` (its two input matrices then hold
    about as many parameters as the plain feed-forward's one), a multiple of 8."""
    return max(8, round(2 * dim_feedforward / 3 / 8) * 8)


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward sublayers, each wrapped by ``residual`` with the
    norm placement of ``options.norm`` (``NORM_PLACEMENT_TABLE``) and LayerScale.

    The defaults (``EncoderOptions()``) are the post-norm layer of the published model
    (PyTorch's ``nn.TransformerEncoderLayer`` default, ReLU feed-forward). Works on
    padded ``[B, N, D]`` and packed ``[T, D]`` activations alike.

    Args:
        first: this is the stack's first layer (it has no value-residual weight: its
            values are the ones the other layers mix in).
        flash_kernel, attention_dropout: as in ``MultiHeadSelfAttention``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float,
        backend: str,
        options: EncoderOptions | None = None,
        first: bool = False,
        flash_kernel: str = "auto",
        attention_dropout: bool = False,
    ) -> None:
        super().__init__()
        options = options or EncoderOptions()
        self.placement = options.placement
        self.swiglu = options.feedforward == "swiglu"
        self.activation = F.gelu if options.feedforward == "gelu" else F.relu
        self.self_attn = MultiHeadSelfAttention(
            d_model,
            n_heads,
            dropout,
            backend,
            qk_norm=options.uses_qk_norm,
            mix_values=options.value_residual and not first,
            flash_kernel=flash_kernel,
            attention_dropout=attention_dropout,
        )
        hidden = swiglu_hidden(dim_feedforward) if self.swiglu else dim_feedforward
        self.linear1 = nn.Linear(d_model, 2 * hidden if self.swiglu else hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        # No module for a norm position "none" (HybridNorm's attention): DDP rejects
        # parameters that get no gradient.
        self.norm1 = None if self.placement.attention == "none" else nn.LayerNorm(d_model)
        self.norm2 = None if self.placement.feedforward == "none" else nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        scale = options.layer_scale_init
        self.scale1 = nn.Parameter(torch.full((d_model,), scale)) if scale > 0 else None
        self.scale2 = nn.Parameter(torch.full((d_model,), scale)) if scale > 0 else None

    def _feedforward(self, x: Tensor) -> tuple[Tensor, None]:
        hidden = self.linear1(x)
        if self.swiglu:
            gate, value = hidden.chunk(2, dim=-1)
            hidden = F.silu(gate) * value
        else:
            hidden = self.activation(hidden)
        return self.dropout(self.linear2(self.dropout(hidden))), None

    def forward(
        self, x: Tensor, layout: AttentionLayout, first_values: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: [B, N, D] or [T, D] -> (same shape, this layer's attention values).

        ``first_values``: the first layer's attention values (value residual) or None.
        """

        def attention(h: Tensor) -> tuple[Tensor, Tensor]:
            out, values = self.self_attn(h, layout, first_values)
            return self.dropout(out), values

        x, values = residual(x, attention, self.norm1, self.placement.attention, self.scale1)
        x, _ = residual(x, self._feedforward, self.norm2, self.placement.feedforward, self.scale2)
        return x, values


class Encoder(nn.Module):
    """A stack of ``n_layers`` encoder layers (plus a final norm for pre-norm).

    Also owns the options that act on the whole stack: the register tokens (added
    before the first layer, dropped after the last), the local-attention mask (built
    once per batch from the hits' phi) and the value residual (first layer's values
    handed to the others).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim_feedforward: int,
        n_layers: int,
        dropout: float,
        backend: str,
        options: EncoderOptions | None = None,
        flash_kernel: str = "auto",
        attention_dropout: bool = False,
    ) -> None:
        super().__init__()
        attention_backend(backend, flash_kernel, attention_dropout)  # refuse before building
        self.options = options or EncoderOptions()
        self.head_dim = d_model // n_heads
        self.layers = nn.ModuleList(
            EncoderLayer(
                d_model,
                n_heads,
                dim_feedforward,
                dropout,
                backend,
                self.options,
                first=i == 0,
                flash_kernel=flash_kernel,
                attention_dropout=attention_dropout,
            )
            for i in range(n_layers)
        )
        # Pre-norm leaves the residual stream un-normalised; the others end in a norm.
        final_norm = self.options.placement.final_norm
        self.final_norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        n_registers = self.options.n_registers
        self.registers = (
            nn.Parameter(0.02 * torch.randn(n_registers, d_model)) if n_registers else None
        )
        self._say_fallbacks(backend, flash_kernel)

    def set_attention(self, backend: str, flash_kernel: str, attention_dropout: bool) -> None:
        """Switch every layer to attention ``backend`` (no weight changes)."""
        attention_backend(backend, flash_kernel, attention_dropout)  # refuse before changing
        for layer in self.layers:
            layer.self_attn.set_backend(backend, flash_kernel, attention_dropout)
        self._say_fallbacks(backend, flash_kernel)

    def _say_fallbacks(self, backend: str, flash_kernel: str) -> None:
        """One log line for each way the varlen kernel will not run for this model."""
        if not ATTENTION_BACKEND_TABLE[backend].varlen_kernel:
            return
        reason = flash_fallback_reason(self.head_dim, flash_kernel)
        if reason is not None:
            log.warning(
                "%s attention: %s; using exact SDPA instead (padded batches)", backend, reason
            )
        if self.options.attention_window > 0:
            log.warning(
                "%s attention with a local window: packed hits go through the padded "
                "scratch buffer (FlexAttention when compiled for CUDA, else masked SDPA)",
                backend,
            )

    def _add_registers(
        self, x: Tensor, layout: AttentionLayout, hit_mask: Tensor | None
    ) -> tuple[Tensor, AttentionLayout, Tensor | None]:
        """Prepend the K register tokens to every event.

        Returns the new activations ([B, K + N, D] or [T + B K, D]), their layout and,
        for packed input, the rows of the hits among the new rows ([T], to drop the
        registers afterwards; None for padded input, where the hits are [:, K:]).
        """
        assert self.registers is not None
        n_reg, d_model = self.registers.shape
        registers = self.registers.to(x.dtype)
        pad = layout.pad_mask
        batch, length = pad.shape
        if hit_mask is not None:  # registers see every real hit and every hit sees them
            mask = hit_mask.new_ones(batch, n_reg + length, n_reg + length)
            mask[:, n_reg:, n_reg:] = hit_mask
            mask[:, :n_reg, n_reg:] = ~pad[:, None, :]
            hit_mask = mask
        if not layout.is_packed:
            x = torch.cat([registers.expand(batch, n_reg, d_model), x], dim=1)
            new_pad = F.pad(pad, (n_reg, 0), value=False)
            return x, AttentionLayout(pad_mask=new_pad, attn_mask=hit_mask), None
        cu = layout.cu_seqlens.long()
        n_hits = len(x)
        new_layout = AttentionLayout.packed(
            cu[1:] - cu[:-1] + n_reg, length + n_reg, n_hits + batch * n_reg
        )
        # Event b's registers take its first K rows; each hit moves down by K (b + 1).
        event = layout.slots // length
        hit_rows = torch.arange(n_hits, device=x.device) + n_reg * (event + 1)
        starts = new_layout.cu_seqlens[:-1].long()
        reg_rows = (starts[:, None] + torch.arange(n_reg, device=x.device)).flatten()
        out = x.new_empty(n_hits + batch * n_reg, d_model)
        out = out.index_copy(0, hit_rows, x).index_copy(0, reg_rows, registers.repeat(batch, 1))
        new_layout.attn_mask = hit_mask
        return out, new_layout, hit_rows

    def forward(self, x: Tensor, layout: AttentionLayout, phi: Tensor | None = None) -> Tensor:
        """x: [B, N, D] or [T, D] -> same shape (register tokens already dropped).

        phi: [B, N] or [T] azimuth of every hit, needed only for local attention.
        """
        hit_mask = None
        if self.options.attention_window > 0:
            if phi is None:
                raise ValueError("local attention (attention_window > 0) needs the hits' phi")
            hit_mask = phi_window_mask(phi, layout, self.options.attention_window)
        hit_rows = None
        if self.registers is not None:
            x, layout, hit_rows = self._add_registers(x, layout, hit_mask)
        elif hit_mask is not None:
            layout = replace(layout, attn_mask=hit_mask)
        first_values = None
        for layer in self.layers:
            x, values = layer(x, layout, first_values)
            if self.options.value_residual and first_values is None:
                first_values = values
        x = self.final_norm(x)
        if self.registers is None:
            return x
        return x[:, self.options.n_registers :] if hit_rows is None else x[hit_rows]
