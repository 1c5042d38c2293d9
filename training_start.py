"""Where a training run starts: a checkpoint to resume, initial weights, or nothing.

``training_loop`` asks two questions before it reads any data:

- ``resume_state``: is there a checkpoint to continue (``--resume``), and was it made
  with this run's data, split and model (``check_resumable``)? A resumed run continues
  everything: weights, optimizer, schedule, epochs, losses.
- ``initial_weights``: does the run start from another checkpoint's weights
  (``--init_weights``, e.g. a shipped model fine-tuned for longer or on other events)?
  Such a run takes the weights, the normaliser and the model of that checkpoint and
  nothing else: a fresh optimizer, a new schedule, epochs counted from 0, its own split
  of its own data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from checkpoint import load_checkpoint
from data_processing.data_files import DataSource, default_data_path
from data_processing.dataset import Normaliser
from data_processing.errors import UserError
from model import ModelConfig
from training_config import RUN_TIME_MODEL_FIELDS, TrainConfig

# Model-config fields a resumed run may change: run-time choices and data statistics.
RESUME_FREE_MODEL_FIELDS = (*RUN_TIME_MODEL_FIELDS, "xy_mean_std")


def stored_model_config(stored_model: dict[str, Any], config: TrainConfig) -> ModelConfig:
    """A checkpoint's model with this run's attention choices: how attention is computed
    (backend, kernel, attention-weight dropout) is a training-time choice, not the weights."""
    return ModelConfig.from_dict(
        {**stored_model, **{name: getattr(config, name) for name in RUN_TIME_MODEL_FIELDS}}
    )


def model_differences(stored_model: dict[str, Any], config: TrainConfig) -> list[str]:
    """The model settings of ``config`` that differ from a checkpoint's ``model_config``
    (one phrase each; run-time choices such as the attention backend may differ)."""
    model_now = config.model_config(stored_model["in_dim"], stored_model["out_dim"]).to_dict()
    return [
        f"model {name} {stored_model[name]!r} in the checkpoint, {model_now[name]!r} now"
        for name in model_now
        if name not in RESUME_FREE_MODEL_FIELDS
        and name in stored_model
        and stored_model[name] != model_now[name]
    ]


def check_resumable(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume ``state`` under settings that change the data, split or model.

    Compares what the settings determine, not how they were spelled: the data file (the
    generated set's name, or the resolved path of a given file), its type, the split
    seed, the hit cap and the model that ``config`` would build. A different seed or
    data set would put the checkpoint's test events into training and mix validation
    losses of two splits; model options would be silently ignored. Runs before any data
    is generated or read.
    """
    if state.get("inference_only"):
        raise UserError(
            f"{path}: an inference-only (shipped) checkpoint holds no optimizer "
            "state and cannot be resumed; train to a new --model_name "
            "(--init_weights starts from its weights)"
        )
    stored_data = state["data"]
    stored_file = Path(stored_data["path"])
    if config.data_path is None:
        # A generated set: its name holds every setting that made it, and the cache may
        # sit elsewhere on another machine.
        same_file = default_data_path(DataSource.of(config)).name == stored_file.name
    else:
        same_file = Path(config.data_path).resolve() == stored_file.resolve()
    differing = [] if same_file else [f"data file {stored_file.name!r} in the checkpoint"]
    for name, now in (
        ("data_type", config.data_type),
        ("split_seed", config.seed),
        ("max_nr_hits", config.max_nr_hits),
    ):
        if name in stored_data and stored_data[name] != now:
            differing.append(f"{name} {stored_data[name]!r} in the checkpoint, {now!r} now")
    differing += model_differences(state["model_config"], config)
    if differing:
        raise UserError(
            f"{path}: cannot resume with other data or model settings ("
            + "; ".join(differing)
            + "); use the checkpoint's settings or train to a new --model_name"
        )


def resume_state(
    config: TrainConfig, checkpoint_path: Path, say: Callable[..., None]
) -> dict[str, Any] | None:
    """The checkpoint to continue (checked against ``config``), or None to start afresh."""
    state = load_checkpoint(checkpoint_path) if config.resume and checkpoint_path.exists() else None
    if config.resume and state is None:
        say(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch")
    if not config.resume and checkpoint_path.exists():
        say(f"{checkpoint_path} exists and will be overwritten (--resume continues it)")
    if state is not None:
        check_resumable(state, config, checkpoint_path)
    return state


@dataclass
class InitialWeights:
    """What a run started with ``--init_weights`` takes from that checkpoint."""

    path: Path
    model_config: ModelConfig  # the checkpoint's model, this run's attention backend
    normaliser: Normaliser  # the checkpoint's: the weights expect its units
    state_dict: dict[str, torch.Tensor]  # its best-validation weights


def initial_weights(config: TrainConfig) -> InitialWeights | None:
    """The weights ``--init_weights`` names, checked against ``config``; None without it.

    The weights are the checkpoint's best-validation ones (what a shipped model holds).
    Model options that differ from the checkpoint's (sizes, norm, feed-forward, ...) are
    refused rather than ignored; the attention backend may differ. Raises ``UserError``
    for a missing or unreadable file.
    """
    if not config.init_weights:
        return None
    path = Path(config.init_weights)
    if not path.is_file():
        raise UserError(f"--init_weights {path}: no such checkpoint")
    state = load_checkpoint(path)
    if not state.get("normaliser") or not {"in_dim", "out_dim"} <= set(
        state.get("model_config") or {}
    ):
        raise UserError(f"--init_weights {path}: not a TransformerRegressor checkpoint")
    differing = model_differences(state["model_config"], config)
    if differing:
        raise UserError(
            f"--init_weights {path}: other model settings ("
            + "; ".join(differing)
            + "); give the checkpoint's model options"
        )
    return InitialWeights(
        path,
        stored_model_config(state["model_config"], config),
        Normaliser.from_dict(state["normaliser"]),
        state["best_model_state_dict"],  # a key every checkpoint has (load_checkpoint)
    )
