"""The network's settings and their choices, without torch (floor 0 of the house).

Everything a command line needs to know about the model before it builds one: the
``ModelConfig`` with its defaults (the published 76k-parameter model), the encoder
variants (``EncoderOptions``) and the lists of choices (attention backends, varlen
kernels, norm placements, feed-forwards). ``model.py``, ``custom_encoder.py`` and
``attention_ops.py`` read their defaults and choices from here, so each is written once;
``python training.py --help`` reads them without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

# The --attention backends, and whether each can drop attention weights in training:
# the varlen kernels behind flash have none (torch's is hard-wired to 0). How each one
# computes attention is custom_encoder.ATTENTION_BACKEND_TABLE.
ATTENTION_WEIGHT_DROPOUT = {"math": True, "sdpa": True, "flash": False}
ATTENTION_BACKENDS = tuple(ATTENTION_WEIGHT_DROPOUT)
# Choices of the varlen kernel behind ``flash``: ``auto`` = flash-attn if it imports,
# else torch's varlen_attn; ``cudnn`` = cuDNN attention on the same packed hits.
FLASH_KERNELS = ("auto", "flash_attn", "torch", "cudnn")
FEEDFORWARDS = ("relu", "gelu", "swiglu")


def check_attention(name: str, flash_kernel: str, attention_dropout: bool) -> None:
    """Refuse an unknown backend or kernel, or attention dropout where the backend has
    none, with a ValueError naming what is unsupported."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; use one of {ATTENTION_BACKENDS}")
    if flash_kernel not in FLASH_KERNELS:
        raise ValueError(f"unknown flash_kernel {flash_kernel!r}; use one of {FLASH_KERNELS}")
    if attention_dropout and not ATTENTION_WEIGHT_DROPOUT[name]:
        able = [b for b, drops in ATTENTION_WEIGHT_DROPOUT.items() if drops]
        raise ValueError(
            f"attention backend {name!r} cannot drop attention weights (attention_dropout); "
            f"turn attention_dropout off or use one of {able}"
        )


class NormPlacement(NamedTuple):
    """Where the LayerNorms sit: around attention and around the feed-forward
    (``pre``: on the sublayer's input, ``post``: on the residual sum, ``none``), after
    the stack, and whether attention normalises queries and keys."""

    attention: str
    feedforward: str
    final_norm: bool
    qk_norm: bool


NORM_PLACEMENT_TABLE = {
    "post": NormPlacement("post", "post", final_norm=False, qk_norm=False),  # published
    "pre": NormPlacement("pre", "pre", final_norm=True, qk_norm=False),
    "hybrid": NormPlacement("none", "post", final_norm=False, qk_norm=True),  # HybridNorm
}
NORM_PLACEMENTS = tuple(NORM_PLACEMENT_TABLE)


@dataclass(frozen=True)
class EncoderOptions:
    """Optional modern variants of the encoder; these defaults (the published model) are
    the only place the option defaults are written (``ModelConfig`` below reads them).

    Attributes:
        norm: ``post`` (published; PyTorch's default layer), ``pre`` (norm before each
            block, final norm after the stack) or ``hybrid`` (HybridNorm: QK-norm inside
            attention, no norm around it, post-norm around the feed-forward).
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

    @classmethod
    def from_fields(cls, values: Any) -> EncoderOptions:
        """The options read from any object with attributes of the same names."""
        return cls(**{f.name: getattr(values, f.name) for f in fields(cls)})

    @property
    def placement(self) -> NormPlacement:
        return NORM_PLACEMENT_TABLE[self.norm]

    @property
    def uses_qk_norm(self) -> bool:
        return self.qk_norm or self.placement.qk_norm


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
    ``EncoderOptions``. ``norm_first=True`` (older checkpoints) means
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
        check_attention(self.attention, self.flash_kernel, self.attention_dropout)

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
