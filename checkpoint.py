"""Checkpoint files: written atomically, read back with validation.

A checkpoint is a dict holding ``epoch``, ``model_state_dict`` (latest weights),
``best_model_state_dict`` (weights with the lowest validation loss),
``optimizer_state_dict``, ``train_losses``, ``val_losses``, ``model_config``,
``normaliser``, ``train_config`` and ``data`` (path, type, split seed and fractions), so
evaluation can rebuild the model and the test split with no repeated hyper-parameters.

A shipped (inference) checkpoint, made by ``inference_checkpoint``, keeps only the best
weights (``model_state_dict`` is the same tensors), has an empty optimizer state and
``inference_only`` set, and may name its own test set (``test_set``: the fields of a
``SimulationConfig``) that evaluation regenerates from its seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from data_processing.common import atomic_write
from data_processing.dataset import Normaliser
from model import ModelConfig, TransformerRegressor

REQUIRED_KEYS = (
    "epoch",
    "model_state_dict",
    "best_model_state_dict",
    "optimizer_state_dict",
    "train_losses",
    "val_losses",
    "model_config",
    "normaliser",
    "data",
)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a killed run never leaves a half file.

    The file is shareable (mode 0644 less the umask), see ``common.atomic_write``.
    """
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # weights_only: a checkpoint is plain containers, numbers, strings and tensors, and
    # unpickling anything else could run code from a downloaded file.
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}")
    return state


def inference_checkpoint(
    state: dict[str, Any], test_set: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of ``state`` for shipping: best weights only, no optimizer state (about a
    third of the size); ``test_set`` (SimulationConfig fields) is stored when given."""
    slim = {
        **state,
        "model_state_dict": state["best_model_state_dict"],
        "optimizer_state_dict": {},
        "inference_only": True,
    }
    if test_set is not None:
        slim["test_set"] = dict(test_set)
    return slim


def model_from_checkpoint(
    state: dict[str, Any], best: bool = True, **config_overrides: Any
) -> tuple[TransformerRegressor, Normaliser]:
    """Rebuild the model (best or latest weights, in eval mode) and its normaliser.

    ``config_overrides`` change run-time-only options such as the attention backend.
    """
    config = ModelConfig.from_dict({**state["model_config"], **config_overrides})
    model = TransformerRegressor(config)
    model.load_state_dict(state["best_model_state_dict" if best else "model_state_dict"])
    model.eval()
    return model, Normaliser.from_dict(state["normaliser"])
