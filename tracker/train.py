"""Train the hit filter and the MaskFormer tracker: ``python -m tracker.train``.

``--stage filter`` trains the hit filter (per-hit BCE), ``--stage tracker`` the tracker
on the hits the filter keeps (probability >= ``--filter_threshold``; ``--ideal_filter``:
the true target hits), ``--stage both`` one after the other. Events come from
``--data_dir`` (simulated there first with ``data_processing.trackml_sim`` if it holds
none), split 70/15/15 by event with ``--seed``.

Both stages run the project's one training loop (``training_loop.run_epochs`` over
``training_steps.run_epoch`` with this family's loss as its ``loss_fn``): the data set
on the device (``DeviceEvents``), hit-budget batches, autocast, DDP under torchrun, the
learning-rate scaling and schedule, early stopping, ``--max_minutes``; each stage's
checkpoint is written atomically after every epoch (``checkpoint.save_checkpoint``) and
``--resume`` continues it. The tracker step matches queries to particles on the host
(one device-to-host copy of the cost matrices per step, as hepattn does).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from checkpoint import load_checkpoint
from data_processing.batching import Batch, BatchPlan, batch_event_indices
from data_processing.dataset import SPLIT_FRACTIONS, split_events
from data_processing.errors import UserError, run_cli
from data_processing.trackml_events import list_events
from evaluation.options import announce_config, check_writable_file
from tracker.config import TrackerConfig, config_from_args
from tracker.data import (
    TARGET_LABEL,
    TARGET_SLOT,
    HitSet,
    feature_statistics,
    read_hit_set,
    split_sectors,
)
from tracker.matching import LossWeights, tracker_loss
from tracker.model import (
    FilterModelConfig,
    HitFilter,
    MaskFormerTracker,
    TrackerModelConfig,
    load_trained,
    n_parameters,
)
from training_loop import RunState, plan_epochs, run_epochs, start_run
from training_steps import DistributedContext, Optimisation, init_distributed, resolve_device

FAMILY = "tracker"


def filter_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Summed BCE of the per-hit filter logits over real hits, and the number of hits."""
    logits = model(batch.x, batch.layout)
    real = ~batch.layout.pad_mask
    bce = F.binary_cross_entropy_with_logits(
        logits.float(), batch.y[..., TARGET_LABEL], reduction="none"
    )
    return (bce * real).sum(), real.sum().float()


def make_tracker_loss(weights: LossWeights):
    """The tracker's loss_fn: matched MaskFormer loss of the batch (counted as one term)."""

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        outputs = model(batch.x, batch.layout)
        slot = batch.y[..., TARGET_SLOT].long()
        loss, _ = tracker_loss(outputs, slot, ~batch.layout.pad_mask, weights)
        return loss, torch.ones((), device=loss.device)

    return loss_fn


def ensure_events(config: TrackerConfig) -> Path:
    """``config.data_dir``, simulated first (``--simulate_events`` events) if it holds none."""
    directory = Path(config.data_dir)
    if directory.is_dir() and list_events(directory):
        return directory
    if config.simulate_events < 3:
        raise UserError(f"{directory}: no TrackML events, and --simulate_events is below 3")
    from data_processing.trackml_sim import SimConfig, simulate_events

    print(f"simulating {config.simulate_events} events into {directory} (seed {config.seed})")
    simulate_events(
        directory,
        SimConfig(seed=config.seed, n_particles=config.n_particles),
        config.simulate_events,
        # The events do not depend on the number of processes (seeded per event id).
        jobs=min(4, os.cpu_count() or 1),
    )
    return directory


def split_hit_sets(config: TrackerConfig, hits: HitSet) -> tuple[HitSet, HitSet, HitSet]:
    """Train / validation / test events (70/15/15, seeded)."""
    parts = split_events(hits.n_events, SPLIT_FRACTIONS, config.seed)
    return tuple(hits.subset(part) for part in parts)  # type: ignore[return-value]


@torch.no_grad()
def filter_probabilities(
    model: HitFilter, hits: HitSet, device: torch.device, batch_size: int = 1
) -> np.ndarray:
    """[T] filter probability of every hit of ``hits`` (events batched, padded)."""
    model.eval()
    data = hits.device_events(device)
    plan = BatchPlan.from_batches(
        batch_event_indices(hits.sizes, batch_size, False, sort_window=1), hits.sizes, device
    )
    out = torch.empty(len(hits.slot), device=device)
    for i in range(len(plan)):
        batch = plan.batch(data, i, False)
        probs = torch.sigmoid(model(batch.x, batch.layout).float())
        real = batch.rows >= 0
        out[batch.rows[real]] = probs[real]
    return out.cpu().numpy()


def tracker_hits(
    config: TrackerConfig, hits: HitSet, device: torch.device, training: bool = False
) -> HitSet:
    """The hits the tracker sees: those the filter keeps (or the true target hits, with
    ``--ideal_filter``, and in training with ``--train_on_true_hits``: a tracker trained
    on a weak filter's output learns from mostly foreign hits and does not converge in a
    CPU budget, benchmarks/results_tracker.md)."""
    if config.ideal_filter or (training and config.train_on_true_hits):
        keep = hits.label
    else:
        model = load_trained(HitFilter, config.filter_model, device)
        keep = filter_probabilities(model, hits, device) >= config.filter_threshold
    kept = hits.select_hits(keep, config.min_hits)
    most = int(kept.n_particles.max()) if kept.n_events else 0
    if most > config.n_queries:
        raise UserError(
            f"{config.data_dir}: an event holds {most} target particles, more than "
            f"--n_queries {config.n_queries}"
        )
    return kept


def _checkpoint(
    run: RunState, epoch: int, optimisation: Optimisation, config: TrackerConfig, stage: str
) -> dict[str, Any]:
    scaler = optimisation.scaler
    return {
        "family": FAMILY,
        "stage": stage,
        "epoch": epoch,
        "step": optimisation.step,
        "model_state_dict": run.model.state_dict(),
        "best_model_state_dict": run.best_state,
        "optimizer_state_dict": run.optimizer.state_dict(),
        "train_losses": run.train_losses,
        "val_losses": run.val_losses,
        "stale_epochs": run.stale_epochs,
        "stopped": run.stopped,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "model_config": run.model_config.to_dict(),
        "normaliser": {},  # the feature statistics live in model_config
        "train_config": asdict(config),
        "data": {
            "path": str(config.data_dir),
            "split_seed": config.seed,
            "split_fractions": list(SPLIT_FRACTIONS),
            "cuts": asdict(config.cuts),
        },
    }


def train_stage(
    config: TrackerConfig,
    stage: str,
    model: nn.Module,
    train_hits: HitSet,
    val_hits: HitSet,
    loss_fn,
    path: Path,
    ctx: DistributedContext,
    device: torch.device,
) -> list[float]:
    """Train ``model`` on ``train_hits`` with the project's loop; returns validation losses."""
    say = print if ctx.is_main else (lambda *args, **kwargs: None)
    state = load_checkpoint(path, device) if config.resume and path.exists() else None
    run = start_run(model, model.config, None, config, state, device)  # type: ignore[arg-type]
    if state is not None:
        say(f"{stage}: resumed from {path} after epoch {state['epoch']}")
    val_batches = batch_event_indices(val_hits.sizes, config.batch_size, False)
    plan = plan_epochs(
        config,
        ctx,
        run,
        state,
        train_hits.device_events(device),
        val_hits.device_events(device),
        train_hits.sizes,
        BatchPlan.from_batches(val_batches[ctx.rank :: ctx.world_size], val_hits.sizes, device),
        False,
        say,
        loss_fn,
        # The tracker step matches on the host: only the filter is compiled.
        compile_model=stage == "filter",
    )
    say(
        f"{stage}: {n_parameters(model)} parameters on {device}; train/val events "
        f"{train_hits.n_events}/{val_hits.n_events}, mean {train_hits.sizes.mean():.0f} hits"
    )
    run_epochs(
        config,
        ctx,
        run,
        plan,
        lambda epoch: _checkpoint(run, epoch, plan.optimisation, config, stage),
        path,
        time.perf_counter(),
        say,
    )
    model.load_state_dict(run.best_state)
    return run.val_losses


def check_paths(config: TrackerConfig, stages: tuple[str, ...]) -> None:
    """Refuse, before any event is read, checkpoints that cannot be written or started
    from (a UserError naming the option)."""
    for stage in stages:
        if stage == "filter" or not (config.ideal_filter or config.train_on_true_hits):
            check_writable_file(config.filter_model, "--filter_model")
        if stage == "tracker":
            check_writable_file(config.tracker_model, "--tracker_model")
    for flag, start in (
        ("--filter_init", config.filter_init),
        ("--tracker_init", config.tracker_init),
    ):
        if start and not Path(start).is_file():
            raise UserError(f"{flag}: checkpoint not found: {start}")


def train(config: TrackerConfig) -> dict[str, Any]:
    """Run the stages ``config.stage`` asks for; returns the validation losses per stage."""
    stages = ("filter", "tracker") if config.stage == "both" else (config.stage,)
    check_paths(config, stages)
    ctx = init_distributed(config.device)
    say = print if ctx.is_main else (lambda *_: None)
    device = resolve_device(config.device, ctx.local_rank)
    directory = ensure_events(config) if ctx.is_main else Path(config.data_dir)
    if ctx.world_size > 1:
        torch.distributed.barrier()  # the other ranks read what rank 0 may have simulated
    hits = read_hit_set(str(directory), config.cuts, config.max_events)
    train_hits, val_hits, _ = split_hit_sets(config, hits)  # whole events, then sectors
    if config.phi_sectors > 1:
        train_hits, val_hits = (
            split_sectors(part, config.phi_sectors, config.sector_overlap, config.min_hits).sectors
            for part in (train_hits, val_hits)
        )
    mean, std = feature_statistics(train_hits)
    losses: dict[str, Any] = {}
    if "filter" in stages:
        torch.manual_seed(config.seed)
        if config.filter_init:
            model = load_trained(
                HitFilter, config.filter_init, device, config.filter_window
            ).train()
            say(f"filter: starting from {config.filter_init} (window {config.filter_window})")
        else:
            model = HitFilter(FilterModelConfig(config.filter_encoder(), mean, std)).to(device)
        losses["filter"] = train_stage(
            config,
            "filter",
            model,
            train_hits,
            val_hits,
            filter_loss,
            Path(config.filter_model),
            ctx,
            device,
        )
    if "tracker" in stages:
        kept_train = tracker_hits(config, train_hits, device, training=True)
        kept_val = tracker_hits(config, val_hits, device, training=True)
        torch.manual_seed(config.seed)
        if config.tracker_init:
            model = load_trained(MaskFormerTracker, config.tracker_init, device).train()
            say(f"tracker: starting from {config.tracker_init} (its sizes and statistics)")
        else:
            model = MaskFormerTracker(
                TrackerModelConfig(
                    config.tracker_encoder(), config.n_queries, config.decoder_layers, mean, std
                )
            ).to(device)
        losses["tracker"] = train_stage(
            config,
            "tracker",
            model,
            kept_train,
            kept_val,
            make_tracker_loss(config.loss_weights),
            Path(config.tracker_model),
            ctx,
            device,
        )
    if ctx.owns_group:
        torch.distributed.destroy_process_group()
    return losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv, "Train the hit filter and the MaskFormer tracker.")
    announce_config(config)
    started = time.perf_counter()
    losses = train(config)
    print(f"finished in {time.perf_counter() - started:.1f} s")
    return losses


if __name__ == "__main__":
    run_cli(main)
