"""Shared pytest fixtures and marker handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
