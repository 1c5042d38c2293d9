"""Train the TransformerRegressor (exact attention) and evaluate it on the test split.

``python training.py`` with no arguments is the project's main job: it generates (once)
a small REDVID-style data set of 3-track linear events under ./data, trains, evaluates
on the held-out test split and prints the TrackML score.

This file holds the one training loop of the project; ``training_flash.py`` and the
refiner reuse it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from checkpoint import load_checkpoint, save_checkpoint
from custom_encoder import ATTENTION_BACKENDS
from data_processing.dataset import (
    DATA_TYPES,
    DeviceEvents,
    EventSet,
    Normaliser,
    batch_event_indices,
    load_events,
    padded_batch,
    split_events,
)
from evaluation.clustering import ClusteringConfig, published_setting
from model import ModelConfig, TransformerRegressor

REPO_ROOT = Path(__file__).resolve().parent
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class TrainConfig:
    """Every setting of a training run (printed at start, stored in the checkpoint).

    Argument names follow the reference implementation's CLI where it had one.
    """

    data_path: str | None = None  # None: generate the default REDVID-style set
    data_type: str = "linear"
    tracks: str = "3"  # tracks per event of the data set ("3", "10-50", ...)
    n_events: int = 4000  # events generated when data_path is None
    max_nr_hits: int = 1000
    model_name: str = "runs/transformer_regressor.pt"
    nr_epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    early_stop: int = 5  # epochs without validation improvement before stopping
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    nr_enc_layers: int = 6
    embedding_size: int = 32
    hidden_dim: int = 128
    nr_heads: int = 4
    dropout: float = 0.1
    norm_first: bool = False
    attention: str = "sdpa"
    min_cluster_size: int | None = None  # None: published setting for the data set
    min_samples: int | None = None
    cluster_jobs: int = -1
    evaluate: bool = True

    def model_config(self, in_dim: int, out_dim: int) -> ModelConfig:
        return ModelConfig(
            in_dim=in_dim,
            out_dim=out_dim,
            d_model=self.embedding_size,
            n_layers=self.nr_enc_layers,
            n_heads=self.nr_heads,
            dim_feedforward=self.hidden_dim,
            dropout=self.dropout,
            norm_first=self.norm_first,
            attention=self.attention,
        )

    def clustering_config(self) -> ClusteringConfig:
        published = published_setting(self.data_type, self.tracks) or (5, 2)
        return ClusteringConfig(
            min_cluster_size=self.min_cluster_size or published[0],
            min_samples=self.min_samples or published[1],
            n_jobs=self.cluster_jobs,
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_data_path(config: TrainConfig) -> Path:
    """Where the generated default data set is cached (git-ignored ./data)."""
    name = f"redvid_{config.data_type}_{config.tracks}_{config.n_events}ev_seed{config.seed}.csv"
    return REPO_ROOT / "data" / name


def ensure_data(config: TrainConfig) -> Path:
    """The data file to train on; generates the default simulated set once if needed."""
    if config.data_path is not None:
        return Path(config.data_path)
    if config.data_type == "trackml":
        raise ValueError("--data_type trackml needs --data_path (see data_processing.trackml_data)")
    path = default_data_path(config)
    if not path.exists():
        from data_processing.redvid import SimulationConfig, generate_dataset

        print(f"generating {config.n_events} {config.data_type} events -> {path}")
        sim = SimulationConfig(
            n_events=config.n_events,
            tracks=config.tracks,
            track_type=config.data_type,
            seed=config.seed,
        )
        generate_dataset(sim, path)
    return path


def masked_squared_error(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of squared errors over hits where ``mask`` is True, and the number of terms.

    pred, target: [..., K]; mask: [...] bool. Returned as 0-d tensors (no host sync).
    """
    weights = mask.to(pred.dtype)[..., None]
    return ((pred - target) ** 2 * weights).sum(), weights.sum() * pred.shape[-1]


def run_epoch(
    model: TransformerRegressor,
    data: DeviceEvents,
    batches: list[np.ndarray],
    optimizer: torch.optim.Optimizer | None = None,
    description: str = "",
) -> float:
    """One pass over ``batches`` (training when an optimizer is given, else evaluation).

    Returns the mean squared error per target value over all real, non-noise hits.
    The loss is accumulated on the device; the only host sync is at the end.
    """
    training = optimizer is not None
    model.train(training)
    sizes = data.sizes.cpu().numpy()
    device = data.inputs.device
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    with torch.set_grad_enabled(training):
        for index in tqdm(batches, desc=description, leave=False, disable=None):
            batch = padded_batch(
                data, torch.as_tensor(index, device=device), int(sizes[index].max())
            )
            sq_error, n_terms = masked_squared_error(
                model(batch.x, batch.layout), batch.y, batch.loss_mask
            )
            if training:
                optimizer.zero_grad(set_to_none=True)
                (sq_error / n_terms.clamp(min=1)).backward()
                optimizer.step()
            total += sq_error.detach()
            count += n_terms
    return float(total / count.clamp(min=1))


@dataclass
class TrainResult:
    checkpoint: Path
    train_losses: list[float]
    val_losses: list[float]
    seconds: float
    metrics: dict[str, Any] | None


def prepare_data(config: TrainConfig) -> tuple[Path, EventSet, tuple[np.ndarray, ...]]:
    """Load the data file and split it 70/15/15 with the run's seed."""
    path = ensure_data(config)
    events = load_events(path, config.data_type, config.max_nr_hits)
    return path, events, split_events(events.n_events, SPLIT_FRACTIONS, config.seed)


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``config`` says; evaluate it on the test split."""
    if config.data_type not in DATA_TYPES:
        raise ValueError(f"unknown data_type {config.data_type!r}; use one of {DATA_TYPES}")
    started = time.perf_counter()
    device = resolve_device(config.device)
    checkpoint_path = Path(config.model_name)
    path, events, (train_idx, val_idx, test_idx) = prepare_data(config)
    state = load_checkpoint(checkpoint_path) if config.resume and checkpoint_path.exists() else None
    if config.resume and state is None:
        print(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch")

    if state is None:
        normaliser = Normaliser.fit(events.subset(train_idx))
        model_config = config.model_config(len(events.input_names), len(events.target_names))
    else:
        normaliser = Normaliser.from_dict(state["normaliser"])
        model_config = ModelConfig.from_dict(state["model_config"])
    torch.manual_seed(config.seed)
    model = TransformerRegressor(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_losses: list[float] = []
    val_losses: list[float] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch, stale_epochs, stopped = 0, 0, False
    if state is not None:
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        best_state = state["best_model_state_dict"]
        train_losses, val_losses = list(state["train_losses"]), list(state["val_losses"])
        start_epoch, stale_epochs = state["epoch"] + 1, state.get("stale_epochs", 0)
        stopped = state.get("stopped", False)
        print(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
    print(
        f"data: {path} ({events.n_events} events, {events.n_hits} hits; "
        f"train/val/test {len(train_idx)}/{len(val_idx)}/{len(test_idx)}); "
        f"model: {model.n_parameters()} parameters on {device}"
    )

    train_data = DeviceEvents.from_events(events.subset(train_idx), normaliser, device)
    val_data = DeviceEvents.from_events(events.subset(val_idx), normaliser, device)
    val_batches = batch_event_indices(val_data.sizes.cpu().numpy(), 4 * config.batch_size, False)
    data_record = {
        "path": str(path),
        "data_type": config.data_type,
        "tracks": config.tracks,
        "split_seed": config.seed,
        "split_fractions": list(SPLIT_FRACTIONS),
        "max_nr_hits": config.max_nr_hits,
    }
    for epoch in range(start_epoch, config.nr_epochs):
        if stopped:
            break
        # Seeding per epoch makes a resumed run draw the same batches as an unbroken one.
        torch.manual_seed(config.seed * 100_003 + epoch)
        rng = np.random.default_rng([config.seed, epoch])
        batches = batch_event_indices(
            train_data.sizes.cpu().numpy(), config.batch_size, shuffle=True, rng=rng
        )
        tick = time.perf_counter()
        train_losses.append(run_epoch(model, train_data, batches, optimizer, f"epoch {epoch}"))
        val_losses.append(run_epoch(model, val_data, val_batches))
        if val_losses[-1] <= min(val_losses):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale_epochs = 0
        else:
            stale_epochs += 1
        stopped = stale_epochs >= config.early_stop
        print(
            f"epoch {epoch:3d}  train {train_losses[-1]:.5f}  val {val_losses[-1]:.5f}  "
            f"({time.perf_counter() - tick:.1f} s){'  early stop' if stopped else ''}",
            flush=True,
        )
        save_checkpoint(
            {
                "epoch": epoch,
                "model_state_dict": model.state_dict(),
                "best_model_state_dict": best_state,
                "optimizer_state_dict": optimizer.state_dict(),
                "train_losses": train_losses,
                "val_losses": val_losses,
                "stale_epochs": stale_epochs,
                "stopped": stopped,
                "model_config": model_config.to_dict(),
                "normaliser": normaliser.to_dict(),
                "train_config": asdict(config),
                "clustering": asdict(config.clustering_config()),
                "data": data_record,
            },
            checkpoint_path,
        )
    seconds = time.perf_counter() - started
    metrics = None
    if config.evaluate and checkpoint_path.exists():
        metrics = evaluate_test_split(checkpoint_path, config)
    return TrainResult(checkpoint_path, train_losses, val_losses, seconds, metrics)


def evaluate_test_split(checkpoint_path: Path, config: TrainConfig) -> dict[str, Any]:
    """Score the best weights on the held-out test split and print the TrackML score."""
    from evaluation.test import EvaluationConfig, evaluate_checkpoint, format_metrics

    metrics = evaluate_checkpoint(
        EvaluationConfig(
            model_name=str(checkpoint_path),
            split="test",
            cluster_jobs=config.cluster_jobs,
            device=str(resolve_device(config.device)),
        )
    )
    print("test split:", format_metrics(metrics))
    return metrics


CHOICES: dict[str, tuple[str, ...]] = {"data_type": DATA_TYPES, "attention": ATTENTION_BACKENDS}
OPTIONAL_INTS = ("min_cluster_size", "min_samples")


def build_arg_parser(defaults: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The training CLI: one option per TrainConfig field, with the same name."""
    defaults = defaults or TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        value = getattr(defaults, f.name)
        flag = f"--{f.name}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif f.name == "data_path":
            parser.add_argument(flag, type=str, default=value)
        elif f.name in OPTIONAL_INTS:
            parser.add_argument(flag, type=int, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value, choices=CHOICES.get(f.name))
    return parser


def config_from_args(argv: list[str] | None, defaults: TrainConfig | None = None) -> TrainConfig:
    args = build_arg_parser(defaults).parse_args(argv)
    return TrainConfig(**vars(args))


def main(argv: list[str] | None = None, defaults: TrainConfig | None = None) -> TrainResult:
    config = config_from_args(argv, defaults)
    print("config:", json.dumps(asdict(config), sort_keys=True))
    result = train(config)
    print(f"finished in {result.seconds:.1f} s; checkpoint {result.checkpoint}")
    return result


if __name__ == "__main__":
    main()
