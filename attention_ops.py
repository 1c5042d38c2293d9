"""What the attention layers run on: the memory layout of a batch's hits, the
local-window mask over it, and the fused kernels beyond plain SDPA (found once at import).

* ``AttentionLayout``: padded ``[B, N, D]`` or packed ``[T, D]`` hits.
* ``phi_window_mask``: local attention over hits in azimuth order, circular at +-pi.
* FlashAttention variable-length kernels on *packed* hits (the ``flash`` backend of
  ``custom_encoder``): flash-attn's ``flash_attn_varlen_func`` if the package imports,
  torch's ``torch.nn.attention.varlen.varlen_attn``, and cuDNN's fused attention on the
  same packed hits through torch's nested-jagged SDPA (``nested_sdpa``). They run on
  CUDA in bf16/fp16 with head sizes that are multiples of 8, and have no dropout.
* FlexAttention restricted by a dense boolean mask (local attention in a model compiled
  for CUDA).

``flash_fallback_reason`` says why a varlen kernel cannot run here. The kernel choices
(``FLASH_KERNELS``) are written in the torch-free ``network_options.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The FlashAttention kernels need a head size that is a multiple of 8.
FLASH_HEAD_DIM_MULTIPLE = 8
# Where the varlen kernels run, and the dtypes they compute in (others are cast to the first).
VARLEN_KERNEL_DEVICES = ("cuda",)
VARLEN_KERNEL_DTYPES = (torch.bfloat16, torch.float16)


@dataclass
class AttentionLayout:
    """How the hits of a batch are laid out in memory.

    Padded layout (``cu_seqlens is None``): activations are ``[B, N, D]``; ``pad_mask``
    is ``[B, N]`` bool, True where the position is padding.

    Packed layout: activations are ``[T, D]``, the hits of event b being rows
    ``cu_seqlens[b]:cu_seqlens[b + 1]``; ``cu_seqlens`` is ``[B + 1]`` int32 on the
    activations' device and ``max_seqlen`` a host-int upper bound of the event sizes (so
    the kernel call needs no device-to-host sync; ``packed_batch`` rounds it up to a power
    of two, at least 16, so compiled models meet few distinct values). For the fallback
    without a varlen kernel, ``pad_mask`` ``[B, max_seqlen]`` describes a padded scratch
    buffer and ``slots`` ``[T]`` int64 each packed hit's row in that buffer flattened to
    ``[B * max_seqlen]``. Build packed layouts with ``AttentionLayout.packed``.

    ``attn_mask`` (set by the encoder for local attention, None otherwise) is
    ``[B, L, L]`` bool, True where query i may attend to key j, over the padded rows
    (L = N) or the scratch buffer (L = max_seqlen); it already excludes padding keys,
    and a padding query may attend to every real key (its output is discarded; this
    keeps its softmax finite).
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


# q, k, v [T, H, Dh] (same half dtype, CUDA), cu_seqlens [B+1] int32, max_seqlen -> [T, H, Dh]
VarlenKernel = Callable[[Tensor, Tensor, Tensor, Tensor, int], Tensor]


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


def flash_fallback_reason(head_dim: int, kernel: str = "auto") -> str | None:
    """Why varlen kernel ``kernel`` (``FLASH_KERNELS``) cannot run for this head size here
    (None: it can)."""
    if kernel not in VARLEN_KERNELS:
        what = "no varlen kernel" if kernel == "auto" else f"no {kernel} varlen kernel"
        no_package = " and no flash-attn package" if kernel in ("auto", "flash_attn") else ""
        return f"{what} in torch {torch.__version__}{no_package}"
    if not torch.cuda.is_available():
        return "no CUDA device"
    if head_dim % FLASH_HEAD_DIM_MULTIPLE:
        return f"head size {head_dim} is not a multiple of {FLASH_HEAD_DIM_MULTIPLE}"
    return None


def flash_kernel_available(head_dim: int, kernel: str = "auto") -> bool:
    """Whether varlen kernel ``kernel`` can run for this head size here."""
    return flash_fallback_reason(head_dim, kernel) is None


def flex_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """FlexAttention restricted by a dense mask. q, k, v: [B, H, L, Dh]; allowed [B, L, L].

    Same result as SDPA with ``allowed`` as boolean mask; the block mask read from it
    lets the fused kernel skip blocks with no allowed pair. No attention dropout. Only
    torch.compile makes it a fused kernel (eager, and on a CPU, it is the unfused
    reference; the CPU one has no backward), so it is used only compiled on CUDA.
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
