"""The settings of a training run and their command line (``training.py``'s options).

:class:`TrainConfig` holds every setting; each field's help text is its ``--help`` line
(``evaluation.options.add_dataclass_arguments`` builds the parser from the fields, so a
setting and its option cannot drift apart). ``config_from_args`` parses a command line;
with ``--resume`` the options not given take the values stored in the checkpoint, so
``python training.py --resume --model_name X`` alone continues run X; with
``--init_weights Y`` the model options not given take Y's.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data_processing.data_types import DATA_TYPES
from data_processing.errors import UserError
from evaluation.clustering import ClusteringConfig, published_setting
from evaluation.options import (
    add_dataclass_arguments,
    config_from_namespace,
    new_parser,
    option,
)
from network_options import (
    ATTENTION_BACKENDS,
    CLI_NAMES,
    FEEDFORWARDS,
    FLASH_KERNELS,
    NORM_PLACEMENTS,
    ModelConfig,
    check_attention,
)

# Model options a run chooses for itself (how attention is computed), never taken from a
# checkpoint it resumes or starts from.
RUN_TIME_MODEL_FIELDS = ("attention", "flash_kernel", "attention_dropout")
LR_SCALINGS = ("sqrt", "linear", "none")
LR_SCHEDULES = ("constant", "cosine")
# --precision: the autocast dtype (training_steps.PRECISIONS maps each to its torch dtype).
PRECISION_NAMES = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Every setting of a training run (printed at start, stored in the checkpoint).

    Argument names follow the reference implementation's CLI where it had one; each
    field's help text is its ``--help`` line.
    """

    data_path: str | None = option(None, "data file; none: generate the default REDVID set")
    data_type: str = option("linear", "linear | helical | trackml", choices=DATA_TYPES)
    tracks: str = option(
        "3", "tracks per event of the data set (3, 1-20, 10-50, ...); picks HDBSCAN's setting"
    )
    n_events: int = option(4000, "events generated when --data_path is not given")
    max_nr_hits: int = option(1000, "largest event allowed (a larger one is an error)")
    model_name: str = option("runs/transformer_regressor.pt", "checkpoint to write")
    nr_epochs: int = option(40, "epochs (a resumed run counts the epochs already done)")
    batch_size: int = option(64, "events per step (--lr is meant for this size)")
    lr: float = option(1e-3, "Adam learning rate at --batch_size events per step")
    early_stop: int = option(5, "epochs without validation improvement before stopping")
    seed: int = option(0, "seed of the split, the data set generated and the weights")
    device: str = option("auto", "auto (CUDA if present) | cpu | cuda")
    resume: bool = option(
        False, "continue --model_name with the data and model options stored in it"
    )
    init_weights: str | None = option(
        None,
        "start from this checkpoint's weights and normaliser (e.g. a shipped model) with a "
        "new optimizer and schedule; model options not given are its own",
    )
    nr_enc_layers: int = option(ModelConfig.n_layers, "encoder layers")
    embedding_size: int = option(ModelConfig.d_model, "model width d_model")
    hidden_dim: int = option(ModelConfig.dim_feedforward, "feed-forward width")
    nr_heads: int = option(ModelConfig.n_heads, "attention heads")
    dropout: float = option(ModelConfig.dropout, "dropout")
    norm_first: bool = option(
        ModelConfig.norm_first, "pre-norm (same as --norm pre, kept for older scripts)"
    )
    attention: str = option(
        ModelConfig.attention,
        "math | sdpa (padded batches) | flash (packed hits)",
        choices=ATTENTION_BACKENDS,
    )
    flash_kernel: str = option(
        ModelConfig.flash_kernel,
        "flash's varlen kernel: auto | flash_attn | torch | cudnn",
        choices=FLASH_KERNELS,
    )
    attention_dropout: bool = option(
        ModelConfig.attention_dropout,
        "dropout on the attention weights too (the reference layer; about 4x slower CPU "
        "training; refused with flash)",
    )
    # Encoder variants (network_options.EncoderOptions); the defaults: the published model.
    norm: str = option(
        ModelConfig.norm,
        "post | pre | hybrid (QK-norm + post-norm feed-forward)",
        choices=NORM_PLACEMENTS,
    )
    layer_scale_init: float = option(ModelConfig.layer_scale_init, "LayerScale init value; 0: off")
    value_residual: bool = option(
        ModelConfig.value_residual, "mix every layer's attention values with the first's"
    )
    qk_norm: bool = option(ModelConfig.qk_norm, "LayerNorm on queries and keys")
    feedforward: str = option(ModelConfig.feedforward, "relu | gelu | swiglu", choices=FEEDFORWARDS)
    n_registers: int = option(ModelConfig.n_registers, "learned register tokens per event")
    attention_window: int = option(
        ModelConfig.attention_window,
        "local attention: neighbours per side in phi order; 0: full attention",
    )
    hits_per_batch: int = option(0, "hit budget per step; 0: --batch_size events per step")
    precision: str = option(
        "fp32", "fp32 | bf16 | fp16 autocast (CUDA; fp32 on a CPU)", choices=PRECISION_NAMES
    )
    compile: bool = option(False, "torch.compile the model (eager if it fails)")
    lr_scaling: str = option(
        "sqrt", "lr rule when a step holds more than --batch_size events", choices=LR_SCALINGS
    )
    warmup_epochs: float = option(0.0, "linear learning-rate warm-up, in epochs")
    lr_schedule: str = option(
        "constant", "constant | cosine (decay to 0 at the last epoch)", choices=LR_SCHEDULES
    )
    max_minutes: float = option(
        0.0, "stop after the epoch that crosses this training time; 0: no limit"
    )
    min_cluster_size: int | None = option(
        None, "HDBSCAN min_cluster_size (default: the published setting of the data set)"
    )
    min_samples: int | None = option(
        None, "HDBSCAN min_samples (default: the published setting of the data set)"
    )
    cluster_jobs: int = option(-1, "clustering processes of the evaluation (-1: all cores)")
    evaluate: bool = option(True, "evaluate the best weights on the test split at the end")
    threads: int = option(
        0, "torch CPU threads; 0: 1 on a CPU (fast on a busy machine) unless OMP_NUM_THREADS"
    )
    progress: bool = option(True, "progress bar inside an epoch (--no-progress: none)")

    def model_config(
        self,
        in_dim: int,
        out_dim: int,
        xy_mean_std: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0),
    ) -> ModelConfig:
        """The model this run trains; ``xy_mean_std`` from the input normaliser (for phi).

        Every ModelConfig field is read from the option of the same name (the sizes from
        their CLI names, ``network_options.CLI_NAMES``)."""
        return ModelConfig.from_settings(
            self, in_dim=in_dim, out_dim=out_dim, xy_mean_std=xy_mean_std
        )

    def clustering_config(self) -> ClusteringConfig:
        """HDBSCAN's settings: the options given, else the data set's published ones."""
        published = published_setting(self.data_type, self.tracks) or (5, 2)
        return ClusteringConfig(
            min_cluster_size=self.min_cluster_size or published[0],
            min_samples=self.min_samples or published[1],
            n_jobs=self.cluster_jobs,
        )


def validate_config(config: TrainConfig) -> None:
    """Reject settings the CLI's ``choices`` would reject (for programmatic callers) and
    combinations no backend can run (``--attention flash --attention_dropout``)."""
    for f in fields(TrainConfig):
        allowed = f.metadata.get("choices")
        if allowed is not None and getattr(config, f.name) not in allowed:
            raise UserError(
                f"unknown {f.name} {getattr(config, f.name)!r}; use one of {tuple(allowed)}"
            )
    if config.hits_per_batch < 0 or config.batch_size < 1:
        raise UserError("--batch_size must be >= 1 and --hits_per_batch >= 0")
    if config.threads < 0:
        raise UserError(f"--threads must be 0 (automatic) or more (got {config.threads})")
    try:
        check_attention(config.attention, config.flash_kernel, config.attention_dropout)
    except ValueError as error:
        raise UserError(f"--attention {config.attention}: {error}") from None


# Options whose stored value a --resume run takes unless they are given: everything that
# makes the data, the split and the model (and the rest of the recipe); not these, which
# belong to this run and this machine.
RESUME_OWN_OPTIONS = (
    "model_name",
    "resume",
    "device",
    "threads",
    "progress",
    "evaluate",
    "cluster_jobs",
)


def config_from_args(argv: list[str] | None, defaults: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of a command line. With ``--resume`` and an existing checkpoint,
    options not given take the values stored in it (see ``RESUME_OWN_OPTIONS``); with
    ``--init_weights`` (and no run to resume) the model options not given take that
    checkpoint's."""
    defaults = defaults or TrainConfig()
    config = config_from_namespace(TrainConfig, build_arg_parser(defaults).parse_args(argv))
    checkpoint_path = Path(config.model_name)
    known = {f.name for f in fields(TrainConfig)}
    if config.resume and checkpoint_path.is_file():
        from checkpoint import load_checkpoint  # lazy: it imports torch, --help must not

        stored = load_checkpoint(checkpoint_path).get("train_config") or {}
        stored = {k: v for k, v in stored.items() if k not in RESUME_OWN_OPTIONS}
    elif config.init_weights and Path(config.init_weights).is_file():
        from checkpoint import load_checkpoint

        stored = model_options(load_checkpoint(config.init_weights).get("model_config") or {})
    else:
        return config
    stored_defaults = TrainConfig(
        **{**asdict(defaults), **{k: v for k, v in stored.items() if k in known}}
    )
    args = build_arg_parser(stored_defaults).parse_args(argv)
    return config_from_namespace(TrainConfig, args)


def model_options(model_config: dict[str, Any]) -> dict[str, Any]:
    """The training options (by CLI name) that build a checkpoint's ``model_config``,
    without the run-time choices (attention backend and kernel) a run makes itself."""
    cli_name = {field: cli for cli, field in CLI_NAMES.items()}
    return {
        cli_name.get(k, k): v for k, v in model_config.items() if k not in RUN_TIME_MODEL_FIELDS
    }


def build_arg_parser(defaults: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The training CLI: one option per TrainConfig field, with the same name."""
    defaults = defaults or TrainConfig()
    parser = new_parser(
        "Train the TransformerRegressor and evaluate it on the test split "
        f"(attention {defaults.attention}, precision {defaults.precision} unless set)."
    )
    return add_dataclass_arguments(parser, TrainConfig, defaults=defaults)
