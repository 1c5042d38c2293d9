"""Transformer encoder layer with pluggable attention.

One encoder layer class serves every attention backend (``ModelConfig.attention``), so a
state dict trained with one backend loads into any other:

* ``math``: the plain reference computation, softmax(QK^T / sqrt(d)) V with the padding
  keys set to -inf. Slow but obviously correct; the yardstick for the other backends.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with a key-padding mask.
* ``flash``: FlashAttention's variable-length kernel on *packed* hits (no padding at
  all): ``flash_attn.flash_attn_varlen_func`` when the flash-attn package imports, else
  torch's own ``torch.nn.attention.varlen.varlen_attn``; or, chosen by
  ``ModelConfig.flash_kernel = "cudnn"``, cuDNN's fused attention on the same packed
  hits. The kernel runs in bf16/fp16 on CUDA (fp32 activations are cast to bf16 for it).
  Where it cannot run (no CUDA, no kernel, head size not a multiple of 8) the layer uses
  the exact fallback below and the model says so in one log line when it is built.

Two memory layouts, described by ``AttentionLayout``; every backend accepts both:

* padded: activations ``[B, N, D]``, ``pad_mask [B, N]`` True at padding.
* packed: activations ``[T, D]`` with the T hits of all events back to back and
  ``cu_seqlens [B + 1]`` the event boundaries. Linear layers and norms then spend nothing
  on padding. Without the varlen kernel, attention scatters the packed rows into a
  ``[B, max_seqlen]`` scratch buffer, runs the backend's padded attention with the
  key-padding mask and gathers the rows back (index tensors built once per batch, in the
  layout, not per layer); a block-diagonal mask over the whole pack would grow as T^2.
  On a 2-core CPU this trained 7 % slower than size-sorted padded batches of the same
  events, so the training loop and the inference path pack hits only where the kernel
  runs (``TransformerRegressor.packs_hits``); the fallback keeps packed input exact
  everywhere else.

Dropout on the attention weights: ``math`` and ``sdpa`` apply it as the reference does;
``flash`` never does, on any device, because the varlen kernels have none (torch's is
hard-wired to 0). The residual and feed-forward dropout is the same for all backends.
(On a CPU, SDPA with attention dropout leaves the fused kernel for the math path and is
about 10x slower, so this is also the fast CPU setting.)

Optional encoder variants (``EncoderOptions``; the defaults are the published model):
norm placement (post / pre / HybridNorm), LayerScale, value residual, QK-norm,
GELU/SwiGLU feed-forward, register tokens and local attention over a sliding window of
hits in azimuth order (circular at phi = +-pi; FlexAttention in a model compiled for
CUDA, the same mask through SDPA or the math path elsewhere: uncompiled FlexAttention is
an unfused reference that materialises every score, and torch's CPU FlexAttention has no
backward). They live in the one layer and stack below; every backend and both layouts
accept them. benchmarks/ablation_encoder.py measures them.

Hits are an unordered set, so there is no positional encoding anywhere. Padding and
other events never influence a real hit: padded keys are masked out of every softmax,
the packed kernel only sees keys of the hit's own event, and the per-hit feed-forward
and norms act on each position alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_BACKENDS = ("math", "sdpa", "flash")
NORM_PLACEMENTS = ("post", "pre", "hybrid")
FEEDFORWARDS = ("relu", "gelu", "swiglu")
# The FlashAttention kernels need a head size that is a multiple of 8.
FLASH_HEAD_DIM_MULTIPLE = 8

log = logging.getLogger(__name__)

# q, k, v [T, H, Dh] (same half dtype, CUDA), cu_seqlens [B+1] int32, max_seqlen -> [T, H, Dh]
VarlenKernel = Callable[[Tensor, Tensor, Tensor, Tensor, int], Tensor]

# Choices of the variable-length kernel behind the ``flash`` backend (``ModelConfig.
# flash_kernel``): ``auto`` = the flash-attn package if it imports, else torch's own
# varlen_attn (FlashAttention-2 kernels); ``cudnn`` = cuDNN's fused attention on the same
# packed hits (through torch's nested-jagged SDPA), an alternative for Hopper GPUs.
FLASH_KERNELS = ("auto", "flash_attn", "torch", "cudnn")


def nested_sdpa(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int, backends: list
) -> Tensor:
    """Attention within each event of packed hits via torch's nested-jagged SDPA.

    q, k, v: [T, H, Dh]; cu_seqlens [B + 1] event boundaries; ``backends``: the
    ``torch.nn.attention.SDPBackend`` values SDPA may pick from. Returns [T, H, Dh].
    ``max_seqlen`` (an upper bound of the event sizes) and a lower bound of 1 (events are
    never empty) are handed to the nested tensors so that nothing waits for the device.
    """
    from torch.nn.attention import sdpa_kernel

    def nested(t: Tensor) -> Tensor:  # [T, H, Dh] -> [B, H, ragged, Dh]
        # One offsets tensor for q, k and v: they share one ragged dimension.
        jagged = torch.nested.nested_tensor_from_jagged(
            t, cu_seqlens, max_seqlen=max_seqlen, min_seqlen=1
        )
        return jagged.transpose(1, 2)

    with sdpa_kernel(backends):
        out = F.scaled_dot_product_attention(nested(q), nested(k), nested(v))
    return out.transpose(1, 2).values()


def _find_varlen_kernels() -> dict[str, tuple[str, VarlenKernel]]:
    """Every variable-length kernel that imports here: choice -> (description, kernel)."""
    kernels: dict[str, tuple[str, VarlenKernel]] = {}
    try:
        from flash_attn import flash_attn_varlen_func
    except (ImportError, OSError):  # not installed, or built against another torch/CUDA
        pass
    else:

        def flash_attn_kernel(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
            # dropout 0 like torch's kernel, so both flash kernels train the same model.
            return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, dropout_p=0.0)

        kernels["flash_attn"] = ("flash_attn.flash_attn_varlen_func", flash_attn_kernel)
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        pass
    else:

        def torch_kernel(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
            # Positional arguments only: the keyword set of varlen_attn changed in 2.10-2.13.
            return varlen_attn(q, k, v, cu, cu, max_len, max_len)

        kernels["torch"] = ("torch.nn.attention.varlen.varlen_attn", torch_kernel)
    from torch.nn.attention import SDPBackend

    has_nested = hasattr(torch.nested, "nested_tensor_from_jagged")
    if has_nested and hasattr(SDPBackend, "CUDNN_ATTENTION"):

        def cudnn_kernel(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
            return nested_sdpa(q, k, v, cu, max_len, [SDPBackend.CUDNN_ATTENTION])

        kernels["cudnn"] = ("cuDNN attention (nested-jagged SDPA)", cudnn_kernel)
    auto = kernels.get("flash_attn") or kernels.get("torch")
    if auto is not None:
        kernels["auto"] = auto
    return kernels


# Resolved once at import; read-only afterwards.
VARLEN_KERNELS = _find_varlen_kernels()
VARLEN_KERNEL_NAME = VARLEN_KERNELS["auto"][0] if "auto" in VARLEN_KERNELS else "none"


def flash_kernel_available(head_dim: int, kernel: str = "auto") -> bool:
    """Whether the ``flash`` backend can use varlen kernel ``kernel`` for this head size."""
    return (
        kernel in VARLEN_KERNELS
        and torch.cuda.is_available()
        and head_dim % FLASH_HEAD_DIM_MULTIPLE == 0
    )


@dataclass(frozen=True)
class EncoderOptions:
    """Optional modern variants of the encoder; the defaults are the published model.

    Attributes:
        norm: ``post`` (published; PyTorch's default layer), ``pre`` (norm before each
            block, final norm after the stack) or ``hybrid`` (HybridNorm: QK-norm inside
            attention, no norm before it, post-norm around the feed-forward).
        layer_scale_init: if > 0, LayerScale: each residual branch is multiplied by a
            learned per-channel vector initialised to this value (0: off).
        value_residual: mix every layer's attention values with the first layer's
            (``v <- v + lambda (v_1 - v)``, lambda learned per layer, init 0.5).
        qk_norm: LayerNorm over the head dimension of queries and keys (always on for
            ``hybrid``); bounds the attention logits.
        feedforward: ``relu`` (published), ``gelu`` or ``swiglu`` (gated SiLU; hidden
            width 2/3 of ``dim_feedforward`` so the parameter count stays about equal).
        n_registers: K learned tokens prepended to every event; they take part in
            attention (every hit may attend to them) and are dropped from the output.
        attention_window: if > 0, local attention: a hit attends only to hits within
            this many ranks of it, on each side, in azimuth (phi) order within its
            event, wrapping around at phi = +-pi (and to the register tokens).
    """

    norm: str = "post"
    layer_scale_init: float = 0.0
    value_residual: bool = False
    qk_norm: bool = False
    feedforward: str = "relu"
    n_registers: int = 0
    attention_window: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORM_PLACEMENTS:
            raise ValueError(f"unknown norm {self.norm!r}; use one of {NORM_PLACEMENTS}")
        if self.feedforward not in FEEDFORWARDS:
            raise ValueError(f"unknown feedforward {self.feedforward!r}; use {FEEDFORWARDS}")
        if self.layer_scale_init < 0 or self.n_registers < 0 or self.attention_window < 0:
            raise ValueError("layer_scale_init, n_registers and attention_window must be >= 0")

    @property
    def uses_qk_norm(self) -> bool:
        return self.qk_norm or self.norm == "hybrid"


@dataclass
class AttentionLayout:
    """How the hits of a batch are laid out in memory.

    Padded layout (``cu_seqlens is None``): activations are ``[B, N, D]``; ``pad_mask``
    is ``[B, N]`` bool, True where the position is padding.

    Packed layout: activations are ``[T, D]``, the hits of event b being rows
    ``cu_seqlens[b]:cu_seqlens[b + 1]``; ``cu_seqlens`` is ``[B + 1]`` int32 on the
    activations' device and ``max_seqlen`` an upper bound of the event sizes (a host
    int, so that the kernel call needs no device-to-host sync; ``packed_batch`` rounds the
    largest event up to a power of two, at least 16, so that compiled models meet few
    distinct values). For the fallback without a varlen kernel,
    ``pad_mask`` ``[B, max_seqlen]`` describes a scratch padded buffer and ``slots``
    ``[T]`` int64 gives each packed hit's row in that buffer flattened to
    ``[B * max_seqlen]``. Build packed layouts with ``AttentionLayout.packed``.

    ``attn_mask`` (set by the encoder for local attention, None otherwise) is
    ``[B, L, L]`` bool, True where query i may attend to key j, over the padded rows
    (L = N) or the packed layout's scratch buffer (L = max_seqlen); it already excludes
    padding keys, and a padding query may attend to every real key (its output is
    discarded; this keeps its softmax finite).
    """

    pad_mask: Tensor
    cu_seqlens: Tensor | None = None
    max_seqlen: int = 0
    slots: Tensor | None = None
    attn_mask: Tensor | None = None

    @property
    def is_packed(self) -> bool:
        return self.cu_seqlens is not None

    @classmethod
    def packed(cls, sizes: Tensor, max_seqlen: int, n_hits: int) -> AttentionLayout:
        """Packed layout of events with ``sizes`` ([B] int, on the target device) hits.

        ``max_seqlen`` (>= sizes.max()) and ``n_hits`` (= sizes.sum()) are passed in
        from the host so that nothing here waits for the device.
        """
        device = sizes.device
        cu_seqlens = torch.zeros(len(sizes) + 1, dtype=torch.int32, device=device)
        cu_seqlens[1:] = torch.cumsum(sizes, 0)
        event = torch.repeat_interleave(
            torch.arange(len(sizes), device=device), sizes, output_size=n_hits
        )
        position = torch.arange(n_hits, device=device) - cu_seqlens[:-1].long()[event]
        slot = torch.arange(max_seqlen, device=device)
        return cls(
            pad_mask=slot[None, :] >= sizes[:, None],
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            slots=event * max_seqlen + position,
        )


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


def flex_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """FlexAttention restricted by a dense mask. q, k, v: [B, H, L, Dh]; allowed [B, L, L].

    The block mask is read from ``allowed``, so the fused kernel skips blocks with no
    allowed pair; same result as SDPA with ``allowed`` as boolean mask. No attention
    dropout (FlexAttention has none). Only torch.compile turns it into a fused kernel
    (eager, and on a CPU, it is the unfused reference; the CPU one has no backward), so
    the layer uses it only on CUDA inside a compiled model.
    """
    from torch.nn.attention.flex_attention import create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as flex

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return allowed[b, q_idx, kv_idx]

    batch, _, length, _ = q.shape
    block_mask = create_block_mask(mask_mod, batch, None, length, length, device=q.device)
    return flex(q, k, v, block_mask=block_mask)


def _has_flex_attention() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401  (torch >= 2.5)
    except ImportError:
        return False
    return True


# Resolved once at import; read-only afterwards.
HAS_FLEX_ATTENTION = _has_flex_attention()


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the hits of each event.

    Args:
        d_model: embedding size D.
        n_heads: number of heads H; D must be divisible by H.
        dropout: dropout on the attention weights (training only; not for ``flash``).
        backend: one of ``ATTENTION_BACKENDS``.
        qk_norm: LayerNorm over the head dimension of queries and keys.
        mix_values: learn a mixing weight of this layer's values with the first layer's
            (value residual; False for the first layer itself).
        flash_kernel: which varlen kernel ``flash`` uses (one of ``FLASH_KERNELS``).
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
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"embedding size {d_model} is not divisible by {n_heads} heads")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; use {ATTENTION_BACKENDS}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = 0.0 if backend == "flash" else dropout
        self.backend = backend
        if flash_kernel not in FLASH_KERNELS:
            raise ValueError(f"unknown flash kernel {flash_kernel!r}; use {FLASH_KERNELS}")
        # The kernel is used whenever the activations are on CUDA (checked per call).
        self.varlen_kernel: VarlenKernel | None = None
        if backend == "flash" and self.head_dim % FLASH_HEAD_DIM_MULTIPLE == 0:
            self.varlen_kernel = VARLEN_KERNELS.get(flash_kernel, (None, None))[1]
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # Shared by all heads, as in ViT-22B; None (no parameters) when off.
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.value_mix = nn.Parameter(torch.tensor(0.5)) if mix_values else None

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
            attend = _math_attention if self.backend == "math" else _sdpa_attention
            out = attend(q, k, v, allowed, self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(batch, n_hits, self.n_heads * self.head_dim)

    def _packed_kernel(self, qkv: Tensor, layout: AttentionLayout) -> Tensor:
        """qkv: [T, 3D] -> [T, D] with the varlen FlashAttention kernel."""
        q, k, v = qkv.view(len(qkv), 3, self.n_heads, self.head_dim).unbind(1)  # [T, H, Dh]
        # The kernel takes only fp16/bf16; outside autocast, run it in bf16 and return
        # the caller's dtype.
        kernel_dtype = qkv.dtype if qkv.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
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
        if not layout.is_packed:
            out = self._padded(qkv, layout.pad_mask, layout.attn_mask)
        elif self.varlen_kernel is not None and qkv.is_cuda and layout.attn_mask is None:
            out = self._packed_kernel(qkv, layout)
        else:
            out = self._packed_fallback(qkv, layout)
        return self.out_proj(out), v


def swiglu_hidden(dim_feedforward: int) -> int:
    """SwiGLU hidden width: 2/3 of ``dim_feedforward`` (its two input matrices then hold
    about as many parameters as the plain feed-forward's one), a multiple of 8."""
    return max(8, round(2 * dim_feedforward / 3 / 8) * 8)


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward block with residuals and LayerNorm.

    The defaults (``EncoderOptions()``) are the post-norm layer of the published model
    (PyTorch's ``nn.TransformerEncoderLayer`` default, ReLU feed-forward). ``norm``
    ``pre`` is pre-norm, which trains more stably for deep stacks; ``hybrid`` is
    HybridNorm. Works on padded ``[B, N, D]`` and packed ``[T, D]`` activations alike.

    Args:
        first: this is the stack's first layer (it has no value-residual weight: its
            values are the ones the other layers mix in).
        flash_kernel: the varlen kernel of the ``flash`` backend (``FLASH_KERNELS``).
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
    ) -> None:
        super().__init__()
        options = options or EncoderOptions()
        self.norm = options.norm
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
        )
        hidden = swiglu_hidden(dim_feedforward) if self.swiglu else dim_feedforward
        self.linear1 = nn.Linear(d_model, 2 * hidden if self.swiglu else hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        # HybridNorm has no norm around attention (QK-norm inside it instead); modules
        # that would get no gradient are not created (DDP rejects unused parameters).
        self.norm1 = None if self.norm == "hybrid" else nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        scale = options.layer_scale_init
        self.scale1 = nn.Parameter(torch.full((d_model,), scale)) if scale > 0 else None
        self.scale2 = nn.Parameter(torch.full((d_model,), scale)) if scale > 0 else None

    def _attention_block(
        self, x: Tensor, layout: AttentionLayout, first_values: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        out, values = self.self_attn(x, layout, first_values)
        out = self.dropout(out)
        return (out if self.scale1 is None else out * self.scale1), values

    def _feedforward_block(self, x: Tensor) -> Tensor:
        hidden = self.linear1(x)
        if self.swiglu:
            gate, value = hidden.chunk(2, dim=-1)
            hidden = F.silu(gate) * value
        else:
            hidden = self.activation(hidden)
        out = self.dropout(self.linear2(self.dropout(hidden)))
        return out if self.scale2 is None else out * self.scale2

    def forward(
        self, x: Tensor, layout: AttentionLayout, first_values: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: [B, N, D] or [T, D] -> (same shape, this layer's attention values).

        ``first_values``: the first layer's attention values (value residual) or None.
        """
        if self.norm == "pre":
            attended, values = self._attention_block(self.norm1(x), layout, first_values)
            x = x + attended
            return x + self._feedforward_block(self.norm2(x)), values
        attended, values = self._attention_block(x, layout, first_values)
        x = x + attended if self.norm1 is None else self.norm1(x + attended)
        return self.norm2(x + self._feedforward_block(x)), values


def phi_window_mask(phi: Tensor, layout: AttentionLayout, window: int) -> Tensor:
    """Local-attention mask: hits within ``window`` ranks of each other in phi order.

    Args:
        phi: [B, N] (padded layout) or [T] (packed) azimuth of every hit, radians.
        layout: the batch's layout (without register tokens).
        window: neighbours allowed on each side in phi order within the event; the
            order is circular, so the hits at phi = +pi - eps and -pi + eps are
            neighbours.

    Returns:
        [B, L, L] bool over the padded rows (L = N) or the packed scratch buffer
        (L = max_seqlen), True where query i may attend to key j (see AttentionLayout).
    """
    pad = layout.pad_mask
    batch, length = pad.shape
    if layout.is_packed:
        phi = phi.new_zeros(batch * length).index_copy(0, layout.slots, phi).view(batch, length)
    # Padding sorts last, so the real hits of an event hold ranks 0 .. size-1.
    order = torch.argsort(phi.masked_fill(pad, float("inf")), dim=1, stable=True)
    positions = torch.arange(length, device=phi.device).expand(batch, length)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    sizes = (~pad).sum(dim=1)
    distance = (rank[:, :, None] - rank[:, None, :]).abs()
    distance = torch.minimum(distance, sizes[:, None, None] - distance)  # wrap at +-pi
    return ~pad[:, None, :] & ((distance <= window) | pad[:, :, None])


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
    ) -> None:
        super().__init__()
        self.options = options or EncoderOptions()
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
            )
            for i in range(n_layers)
        )
        # Pre-norm leaves the residual stream un-normalised; post-norm and HybridNorm
        # already end in a norm.
        self.final_norm = nn.LayerNorm(d_model) if self.options.norm == "pre" else nn.Identity()
        n_registers = self.options.n_registers
        self.registers = (
            nn.Parameter(0.02 * torch.randn(n_registers, d_model)) if n_registers else None
        )
        if backend == "flash" and not flash_kernel_available(d_model // n_heads, flash_kernel):
            log.warning(
                "flash attention: %s; using exact SDPA instead (padded batches)",
                _why_no_flash_kernel(d_model // n_heads, flash_kernel),
            )
        if backend == "flash" and self.options.attention_window > 0:
            log.warning(
                "flash attention with a local window: packed hits go through the padded "
                "scratch buffer (FlexAttention when compiled for CUDA, else masked SDPA)"
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


def _why_no_flash_kernel(head_dim: int, kernel: str) -> str:
    if kernel not in VARLEN_KERNELS:
        what = "no varlen kernel" if kernel == "auto" else f"no {kernel} varlen kernel"
        return f"{what} in torch {torch.__version__}" + (
            " and no flash-attn package" if kernel in ("auto", "flash_attn") else ""
        )
    if not torch.cuda.is_available():
        return "no CUDA device"
    return f"head size {head_dim} is not a multiple of {FLASH_HEAD_DIM_MULTIPLE}"
