"""Shared pytest fixtures and marker handling."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import training

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TRACKML_SAMPLE = SHARED_DATA / "trackml_sample"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def trackml_sample_dir() -> Path:
    """Directory with the real 5,527-hit TrackML sample event (event000000001)."""
    if not (TRACKML_SAMPLE / "event000000001-hits.csv.gz").exists():
        message = f"TrackML sample not found at {TRACKML_SAMPLE} (../shared beside the repo)"
        # CI always has ../shared: there a missing sample is an error, not a quiet skip.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TRACKML_SAMPLE


#: A model and run small enough for a CPU test: 2 layers of width 16, no evaluation.
TINY_TRAINING = {
    "data_type": "linear",
    "nr_epochs": 2,
    "batch_size": 32,
    "embedding_size": 16,
    "hidden_dim": 32,
    "nr_enc_layers": 2,
    "nr_heads": 2,
    "evaluate": False,
    "cluster_jobs": 1,
    "device": "cpu",
    "progress": False,
}


def make_tiny_train_config(
    data: str | Path, checkpoint: str | Path, **overrides: Any
) -> training.TrainConfig:
    """TrainConfig of a tiny CPU run on ``data`` writing ``checkpoint`` (``TINY_TRAINING``
    with ``overrides``)."""
    values = {**TINY_TRAINING, "data_path": str(data), "model_name": str(checkpoint)}
    return training.TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def tiny_train_config() -> Callable[..., training.TrainConfig]:
    """The one TrainConfig builder of the tests: ``tiny_train_config(data, checkpoint,
    **overrides)`` (see ``make_tiny_train_config``); session-scoped, so module fixtures
    can use it."""
    return make_tiny_train_config
