"""The TransformerRegressor: per-hit track-parameter regression over a whole event.

input projection (in_dim -> d_model) -> encoder stack -> linear head (d_model -> out_dim).
Hits are a set: no positional encoding, and the output for a hit depends only on the
hits of its own event. The same weights run on padded ``[B, N, F]`` or packed ``[T, F]``
batches with any attention backend (``ModelConfig.attention``: math, sdpa, flash).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from attention_ops import flash_kernel_available
from custom_encoder import AttentionLayout, Encoder, EncoderOptions, attention_backend

# The training CLI keeps the reference implementation's names for the model sizes;
# inside the network each has one name, its ModelConfig field. CLI name -> field name.
CLI_NAMES = {
    "nr_enc_layers": "n_layers",
    "embedding_size": "d_model",
    "hidden_dim": "dim_feedforward",
    "nr_heads": "n_heads",
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TransformerRegressor (stored in every checkpoint).

    The defaults are the published 76k-parameter configuration for REDVID data, and the
    one place the model's defaults are written: the training CLI reads them from here
    (``ModelConfig.n_layers`` etc.), the encoder-option fields (``norm`` on) from
    ``custom_encoder.EncoderOptions``. ``norm_first=True`` (older checkpoints) means
    ``norm="pre"``, and the two are kept consistent. ``attention``, ``flash_kernel`` and
    ``attention_dropout`` choose how attention is computed, not the weights
    (``TransformerRegressor.set_attention`` switches them on a live model).
    """

    in_dim: int = 3
    out_dim: int = 3
    d_model: int = 32
    n_layers: int = 6
    n_heads: int = 4
    dim_feedforward: int = 128
    dropout: float = 0.1
    norm_first: bool = False
    attention: str = "sdpa"  # math | sdpa | flash: any backend loads any backend's weights
    flash_kernel: str = "auto"  # the flash backend's varlen kernel
    # Dropout on the attention weights too (the reference's layer). Off: on a CPU it
    # forces SDPA's unfused math kernel (4x slower training, benchmarks/
    # results_attention_defaults_cpu.md); residual and feed-forward dropout stay on.
    attention_dropout: bool = False
    norm: str = EncoderOptions.norm  # post | pre | hybrid
    layer_scale_init: float = EncoderOptions.layer_scale_init  # 0: no LayerScale
    value_residual: bool = EncoderOptions.value_residual
    qk_norm: bool = EncoderOptions.qk_norm
    feedforward: str = EncoderOptions.feedforward  # relu | gelu | swiglu
    n_registers: int = EncoderOptions.n_registers
    attention_window: int = EncoderOptions.attention_window  # 0: full attention
    # Input normaliser's (mean x, std x, mean y, std y): inputs 0 and 1 are the hit's x
    # and y, and local attention needs the true phi = atan2(y, x), so the model undoes
    # the standardisation. Set by training from the fitted normaliser.
    xy_mean_std: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm_first and self.norm == "post":
            self.norm = "pre"
        self.norm_first = self.norm == "pre"
        self.xy_mean_std = tuple(float(v) for v in self.xy_mean_std)
        self.encoder_options()  # validates the option values
        # Refuses what the backend cannot do (e.g. attention dropout with flash).
        attention_backend(self.attention, self.flash_kernel, self.attention_dropout)

    def encoder_options(self) -> EncoderOptions:
        return EncoderOptions.from_fields(self)

    @classmethod
    def from_settings(cls, settings: Any, **values: Any) -> ModelConfig:
        """The config of a settings object (e.g. training's TrainConfig) that spells the
        sizes by their CLI names (``CLI_NAMES``) and every other field by its own name;
        fields it lacks take their defaults, ``values`` override."""
        cli_name = {field: cli for cli, field in CLI_NAMES.items()}
        found = {
            f.name: getattr(settings, cli_name.get(f.name, f.name))
            for f in fields(cls)
            if hasattr(settings, cli_name.get(f.name, f.name))
        }
        return cls(**{**found, **values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a checkpoint dict; unknown keys are an error, not silently dropped.

        Keys added since a checkpoint was written take their (published) defaults.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**values)


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
