"""The training loop under DistributedDataParallel: 2 CPU processes, gloo backend.

The processes are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT in the environment) and run the ordinary ``training_loop.train``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import training
import training_loop
from checkpoint import load_checkpoint
from data_processing.redvid import SimulationConfig, generate_dataset
from tests.conftest import make_tiny_train_config

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, config: training.TrainConfig, out_dir: str) -> None:
    """One rank: torchrun's environment, then the ordinary training entry point."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)  # two ranks share two cores
    result = training_loop.train(config)
    torch.save(
        {
            "state": result.model.state_dict(),
            "train_losses": result.train_losses,
            "val_losses": result.val_losses,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lin3.csv"
    config = SimulationConfig(n_events=300, tracks="3", track_type="linear", seed=2)
    return generate_dataset(config, path, progress=False)


@pytest.mark.parametrize("attention", ["sdpa", "flash"])
def test_two_gloo_ranks_train_identical_weights(
    linear_file: Path, tmp_path: Path, attention: str
) -> None:
    config = make_tiny_train_config(
        linear_file,
        tmp_path / "ddp.pt",
        nr_epochs=3,
        batch_size=16,
        hits_per_batch=160 if attention == "flash" else 0,
        attention=attention,
    )
    mp.spawn(_worker, args=(_free_port(), config, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    # Gradients were averaged every step: the ranks end with bit-identical weights ...
    for name, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][name], value, atol=0.0, rtol=0.0)
    # ... and agree on the (all-reduced) losses, so on early stopping too.
    assert ranks[0]["val_losses"] == ranks[1]["val_losses"]
    assert ranks[0]["train_losses"] == ranks[1]["train_losses"]
    losses = ranks[0]["val_losses"]
    assert losses[-1] < 0.7 * losses[0]
    # Only rank 0 wrote the checkpoint, with the final weights of the run.
    state = load_checkpoint(tmp_path / "ddp.pt")
    assert state["epoch"] == 2
    for name, value in state["model_state_dict"].items():
        torch.testing.assert_close(value, ranks[0]["state"][name])
    assert not list(tmp_path.glob(".ddp.pt.*"))
    np.testing.assert_allclose(state["val_losses"], losses)
