"""The TransformerRegressor: per-hit track-parameter regression over a whole event.

input projection (in_dim -> d_model) -> encoder stack -> linear head (d_model -> out_dim).
Hits are a set: no positional encoding, and the output for a hit depends only on the
hits of its own event. The same weights run on padded ``[B, N, F]`` or packed ``[T, F]``
batches with any attention backend (``ModelConfig.attention``: math, sdpa, flash).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from attention_ops import flash_kernel_available
from custom_encoder import AttentionLayout, Encoder
from network_options import CLI_NAMES, ModelConfig

# ModelConfig (the settings, with their defaults) lives in the torch-free
# network_options.py, so that command lines read it without importing torch.
__all__ = ["CLI_NAMES", "ModelConfig", "TransformerRegressor"]


class TransformerRegressor(nn.Module):
    """Encoder-only transformer mapping every hit of an event to its track parameters."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.input_proj = nn.Linear(config.in_dim, config.d_model)
        self.encoder = Encoder(
            d_model=config.d_model,
            n_heads=config.n_heads,
            dim_feedforward=config.dim_feedforward,
            n_layers=config.n_layers,
            dropout=config.dropout,
            backend=config.attention,
            options=config.encoder_options(),
            flash_kernel=config.flash_kernel,
            attention_dropout=config.attention_dropout,
        )
        self.head = nn.Linear(config.d_model, config.out_dim)

    def hit_phi(self, x: Tensor) -> Tensor:
        """Azimuth atan2(y, x) in (-pi, pi] of every hit, from normalised inputs [..., F]."""
        x_mean, x_std, y_mean, y_std = self.config.xy_mean_std
        return torch.atan2(x[..., 1].float() * y_std + y_mean, x[..., 0].float() * x_std + x_mean)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """Predict track parameters.

        Args:
            x: normalised hit coordinates, [B, N, in_dim] (padded layout) or [T, in_dim]
                (packed layout: the hits of all events back to back).
            layout: padding mask or event boundaries (see ``AttentionLayout``).

        Returns:
            [B, N, out_dim] or [T, out_dim] normalised track parameters; values at
            padding are meaningless.
        """
        phi = self.hit_phi(x) if self.config.attention_window > 0 else None
        return self.head(self.encoder(self.input_proj(x), layout, phi))

    def packs_hits(self, device: torch.device) -> bool:
        """Whether batches for this model on ``device`` should be packed.

        Only where the flash backend's varlen kernel runs. Elsewhere attention needs a
        padded buffer anyway, and size-sorted padded batches are as fast: on a 2-core
        CPU the packed fallback (scatter to a padded buffer per layer) trained 7 %
        slower than padded batches of the same events.
        """
        config = self.config
        return (
            config.attention == "flash"
            and device.type == "cuda"
            and config.attention_window == 0  # local attention needs the padded buffer
            and flash_kernel_available(config.d_model // config.n_heads, config.flash_kernel)
        )

    def set_attention(
        self,
        attention: str,
        flash_kernel: str | None = None,
        attention_dropout: bool | None = None,
    ) -> None:
        """Switch every layer to attention backend ``attention`` (and, if given, kernel
        and attention dropout), in place: the weights are untouched, ``config`` follows.

        A combination the backend cannot do is refused before anything changes.
        """
        config = replace(
            self.config,
            attention=attention,
            flash_kernel=self.config.flash_kernel if flash_kernel is None else flash_kernel,
            attention_dropout=(
                self.config.attention_dropout if attention_dropout is None else attention_dropout
            ),
        )
        self.encoder.set_attention(config.attention, config.flash_kernel, config.attention_dropout)
        self.config = config

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
