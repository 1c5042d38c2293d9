"""The TransformerRegressor: per-hit track-parameter regression over a whole event.

input projection (in_dim -> d_model) -> encoder stack -> linear head (d_model -> out_dim).
Hits are a set: no positional encoding, and the output for a hit depends only on the
hits of its own event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import Tensor, nn

from custom_encoder import AttentionLayout, Encoder


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TransformerRegressor (stored in every checkpoint).

    The defaults are the published 76k-parameter configuration for REDVID data.
    """

    in_dim: int = 3
    out_dim: int = 3
    d_model: int = 32
    n_layers: int = 6
    n_heads: int = 4
    dim_feedforward: int = 128
    dropout: float = 0.1
    norm_first: bool = False
    attention: str = "sdpa"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a checkpoint dict; unknown keys are an error, not silently dropped."""
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
            norm_first=config.norm_first,
            backend=config.attention,
        )
        self.head = nn.Linear(config.d_model, config.out_dim)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        """Predict track parameters.

        Args:
            x: normalised hit coordinates, [B, N, in_dim] (padded layout).
            layout: where the padding is (see ``AttentionLayout``).

        Returns:
            [B, N, out_dim] normalised track parameters; values at padding are meaningless.
        """
        return self.head(self.encoder(self.input_proj(x), layout))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
