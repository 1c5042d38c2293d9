"""The one training loop of the project (``train``): data, model, epochs, checkpoints.

``training.py`` is its command line (it parses the options, then imports this module,
so ``--help`` needs no torch); ``training_flash.py`` (FlashAttention on packed hits,
bf16), the refiner and other model families reuse it. What one epoch of steps does (the
loss, the optimizer step, the learning-rate schedule, autocast, compilation, the
process group) is ``training_steps.py``.

The loop is built for speed on a GPU: the data set lives on the device, an epoch's
batches are uploaded in one copy, nothing inside a step waits for the device (the loss
is read once per epoch), optional bf16/fp16 autocast, fused Adam on CUDA and optional
torch.compile.

Multi-GPU: launched by ``torchrun`` (WORLD_SIZE > 1 in the environment) the same loop
runs under DistributedDataParallel: every rank draws the same seeded batch list each
epoch and takes a disjoint shard of it; losses are all-reduced once per epoch; only
rank 0 writes checkpoints and evaluates.

Learning rate and batch size: ``--lr`` is the rate for ``--batch_size`` events per step
(the reference's 1e-3 at 64 events). When a step holds k times as many events (a hit
budget ``--hits_per_batch`` and/or several GPUs), the rate is scaled by sqrt(k)
(``--lr_scaling sqrt``, the square-root rule for Adam), k (``linear``) or not at all
(``none``), optionally reached by a linear warm-up over ``--warmup_epochs`` and
followed by a cosine decay to zero at the last epoch (``--lr_schedule cosine``).
``--max_minutes`` ends a run after the epoch that crosses a training-time budget.

CPU threads: ``--threads 0`` (default) trains with one torch thread on a CPU unless
``OMP_NUM_THREADS`` says otherwise: torch's default of one spinning thread per core
slows an epoch 30-fold when another process competes for the cores
(``benchmarks/results_threads_cpu.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from checkpoint import save_checkpoint
from data_processing.batching import BatchPlan, DeviceEvents, batch_event_indices
from data_processing.data_files import DataSource, ensure_data
from data_processing.dataset import (
    SPLIT_FRACTIONS,
    EventSet,
    Normaliser,
    load_events,
    split_events,
)
from data_processing.errors import UserError
from evaluation.options import check_writable_file
from model import ModelConfig, TransformerRegressor
from training_config import TrainConfig, validate_config
from training_start import InitialWeights, initial_weights, resume_state, stored_model_config
from training_steps import (
    DistributedContext,
    LossFn,
    Optimisation,
    effective_precision,
    init_distributed,
    learning_rate_schedule,
    maybe_compile,
    resolve_device,
    run_epoch,
)


def events_per_step(config: TrainConfig, mean_event_size: float, world_size: int) -> float:
    """Events in one optimizer step, over all ranks."""
    if config.hits_per_batch > 0:
        per_rank = max(1.0, config.hits_per_batch / mean_event_size)
    else:
        per_rank = float(config.batch_size)
    return per_rank * world_size


def scaled_lr(config: TrainConfig, n_events_per_step: float) -> float:
    """``config.lr`` (meant for ``batch_size`` events per step) scaled to the real step.

    With k = events per step / batch_size: ``sqrt`` gives lr * sqrt(k) (Adam's
    square-root scaling rule), ``linear`` lr * k, ``none`` lr.
    """
    k = n_events_per_step / config.batch_size
    return config.lr * {"sqrt": math.sqrt(k), "linear": k, "none": 1.0}[config.lr_scaling]


def epoch_batches(
    config: TrainConfig, sizes: np.ndarray, epoch: int, ctx: DistributedContext
) -> list[np.ndarray]:
    """This rank's training batches for ``epoch``: seeded, identical on every rank before
    sharding, then a disjoint shard per rank.

    Every rank must take the same number of steps (DDP all-reduces gradients in lock
    step), so the batch list is extended by wrapping around to a multiple of the world
    size, as DistributedSampler does.
    """
    rng = np.random.default_rng([config.seed, epoch])
    batches = batch_event_indices(
        sizes, config.batch_size, True, rng, hits_per_batch=config.hits_per_batch
    )
    if ctx.world_size == 1:
        return batches
    n_total = math.ceil(len(batches) / ctx.world_size) * ctx.world_size
    return [batches[i % len(batches)] for i in range(ctx.rank, n_total, ctx.world_size)]


def xy_mean_std(events: EventSet, normaliser: Normaliser) -> tuple[float, float, float, float]:
    """The input normaliser's (mean x, std x, mean y, std y), from which the model
    recovers each hit's phi (for local attention); inputs 0 and 1 must be x and y."""
    if tuple(events.input_names[:2]) != ("x", "y"):
        raise UserError(f"inputs 0 and 1 must be x and y, not {events.input_names[:2]}")
    mean, std = normaliser.input_mean, normaliser.input_std
    return float(mean[0]), float(std[0]), float(mean[1]), float(std[1])


@dataclass
class TrainResult:
    checkpoint: Path
    train_losses: list[float]
    val_losses: list[float]
    seconds: float
    metrics: dict[str, Any] | None
    model: TransformerRegressor | None = None  # final (not best) weights of this rank


def prepare_data(config: TrainConfig) -> tuple[Path, EventSet, tuple[np.ndarray, ...]]:
    """Load the data file and split it 70/15/15 with the run's seed."""
    path = ensure_data(DataSource.of(config))
    events = load_events(path, config.data_type, config.max_nr_hits)
    return path, events, split_events(events.n_events, SPLIT_FRACTIONS, config.seed)


def out_of_training_time(config: TrainConfig, seconds: float) -> bool:
    """Whether ``--max_minutes`` is used up after ``seconds`` of training.

    Under DDP the ranks' clocks differ a little; rank 0 decides for all of them, so
    every rank stops after the same epoch.
    """
    if config.max_minutes <= 0:
        return False
    flag = torch.tensor([float(seconds >= 60.0 * config.max_minutes)])
    if dist.is_available() and dist.is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = flag.to(backend_device)
        dist.broadcast(flag, src=0)
    return bool(flag.item())


# Called on rank 0 after each epoch with (epoch, model, training seconds so far, val loss).
EpochCallback = Callable[[int, TransformerRegressor, float, float], None]


def train(config: TrainConfig, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train (or resume) a model as ``config`` says; evaluate it on the test split.

    Under torchrun (WORLD_SIZE > 1) this runs data-parallel on every rank; the result
    (and the checkpoint, and the evaluation) come from rank 0. ``on_epoch`` (e.g. a
    time-to-accuracy probe) runs on rank 0 after every epoch; its own time is not
    counted in the training seconds it is given. An unwritable ``--model_name`` is
    refused before any data is read.
    """
    validate_config(config)
    check_writable_file(config.model_name, "--model_name")
    started = time.perf_counter()
    ctx = init_distributed(config.device)
    try:
        model, train_losses, val_losses = _train_loop(config, ctx, on_epoch)
        if ctx.owns_group:
            dist.barrier()  # no rank leaves while another still trains
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()
    seconds = time.perf_counter() - started
    checkpoint_path = Path(config.model_name)
    metrics = None
    if config.evaluate and ctx.is_main and checkpoint_path.exists():
        metrics = evaluate_test_split(checkpoint_path, config)
    return TrainResult(checkpoint_path, train_losses, val_losses, seconds, metrics, model)


@dataclass
class RunState:
    """What the loop carries from epoch to epoch, and the checkpoint stores."""

    model: TransformerRegressor
    model_config: ModelConfig
    normaliser: Normaliser
    optimizer: torch.optim.Optimizer
    best_state: dict[str, torch.Tensor]
    train_losses: list[float]
    val_losses: list[float]
    start_epoch: int = 0
    stale_epochs: int = 0
    stopped: bool = False
    step: int = 0

    def checkpoint(
        self,
        epoch: int,
        optimisation: Optimisation,
        config: TrainConfig,
        data_record: dict[str, Any],
    ) -> dict[str, Any]:
        """The checkpoint dict after ``epoch`` (its keys are the on-disk format)."""
        scaler = optimisation.scaler
        return {
            "epoch": epoch,
            "step": optimisation.step,
            "model_state_dict": self.model.state_dict(),
            "best_model_state_dict": self.best_state,
            "optimizer_state_dict": self.optimizer.state_dict(),
            "train_losses": self.train_losses,
            "val_losses": self.val_losses,
            "stale_epochs": self.stale_epochs,
            "stopped": self.stopped,
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
            "model_config": self.model_config.to_dict(),
            "normaliser": self.normaliser.to_dict(),
            "train_config": asdict(config),
            "clustering": asdict(config.clustering_config()),
            "data": data_record,
        }


def _new_run(
    config: TrainConfig,
    state: dict[str, Any] | None,
    events: EventSet,
    train_idx: np.ndarray,
    device: torch.device,
    init: InitialWeights | None = None,
) -> RunState:
    """The model, normaliser and optimizer of a new run (from ``init`` when given), or of
    ``state`` restored."""
    if state is None and init is not None:
        normaliser, model_config = init.normaliser, init.model_config
    elif state is None:
        normaliser = Normaliser.fit(events.subset(train_idx))
        model_config = config.model_config(
            len(events.input_names), len(events.target_names), xy_mean_std(events, normaliser)
        )
    else:
        normaliser = Normaliser.from_dict(state["normaliser"])
        model_config = stored_model_config(state["model_config"], config)
    torch.manual_seed(config.seed)
    model = TransformerRegressor(model_config).to(device)
    if state is None and init is not None:
        model.load_state_dict(init.state_dict)
    return start_run(model, model_config, normaliser, config, state, device)


def start_run(
    model: nn.Module,
    model_config: Any,
    normaliser: Any,
    config: TrainConfig,
    state: dict[str, Any] | None,
    device: torch.device,
) -> RunState:
    """The optimizer and run state of ``model`` (on ``device``), ``state`` restored if given.

    ``model_config`` needs ``to_dict``; ``normaliser`` is what the family's checkpoint
    stores beside it (None where the model holds its own feature statistics).
    """
    fused = device.type == "cuda"  # one kernel for the whole Adam update
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    run = RunState(model, model_config, normaliser, optimizer, best_state, [], [])  # type: ignore[arg-type]
    if state is not None:
        _restore(run, state, fused, config.early_stop)
    return run


def _restore(run: RunState, state: dict[str, Any], fused: bool, early_stop: int) -> None:
    """Load weights, optimizer, losses and counters of a checkpoint into ``run``."""
    run.model.load_state_dict(state["model_state_dict"])
    optimizer_state = state["optimizer_state_dict"]
    # The checkpoint may come from another device. Set the flag before loading:
    # load_state_dict puts Adam's step counters where the saved flag says (on the
    # device for fused Adam, on the host otherwise).
    for group in optimizer_state["param_groups"]:
        group["fused"] = fused
    run.optimizer.load_state_dict(optimizer_state)
    run.best_state = state["best_model_state_dict"]
    run.train_losses, run.val_losses = list(state["train_losses"]), list(state["val_losses"])
    run.start_epoch, run.stale_epochs = state["epoch"] + 1, state.get("stale_epochs", 0)
    # Early stopping is judged again with this run's --early_stop; a time-limit stop
    # is not carried over (continuing after it is what --resume is for).
    run.stopped, run.step = run.stale_epochs >= early_stop, state.get("step", 0)


@dataclass
class EpochPlan:
    """How the epochs run: device data, batching, the schedule and the model to step."""

    train_data: DeviceEvents
    val_data: DeviceEvents
    train_sizes: np.ndarray
    val_plan: BatchPlan
    packed: bool
    precision: str
    step_model: nn.Module
    optimisation: Optimisation
    loss_fn: LossFn | None = None  # another model family's loss (run_epoch); None: MSE


def _plan_epochs(
    config: TrainConfig,
    ctx: DistributedContext,
    run: RunState,
    state: dict[str, Any] | None,
    train_set: EventSet,
    val_set: EventSet,
    device: torch.device,
    say: Callable[..., None],
) -> EpochPlan:
    """``plan_epochs`` for a regression run: its events normalised onto the device,
    validation in batches of 4 x the training batch (no gradients to hold)."""
    model, normaliser = run.model, run.normaliser
    val_batches = batch_event_indices(
        val_set.sizes, 4 * config.batch_size, False, hits_per_batch=4 * config.hits_per_batch
    )
    return plan_epochs(
        config,
        ctx,
        run,
        state,
        DeviceEvents.from_events(train_set, normaliser, device),
        DeviceEvents.from_events(val_set, normaliser, device),
        train_set.sizes,
        BatchPlan.from_batches(val_batches[ctx.rank :: ctx.world_size], val_set.sizes, device),
        model.packs_hits(device),
        say,
    )


def plan_epochs(
    config: TrainConfig,
    ctx: DistributedContext,
    run: RunState,
    state: dict[str, Any] | None,
    train_data: DeviceEvents,
    val_data: DeviceEvents,
    train_sizes: np.ndarray,
    val_plan: BatchPlan,
    packed: bool,
    say: Callable[..., None],
    loss_fn: LossFn | None = None,
    compile_model: bool = True,
) -> EpochPlan:
    """How the epochs of ``run`` go: the learning-rate scaling and schedule, DDP and
    compilation (``config.compile`` and ``compile_model``), the fp16 GradScaler
    (restored from ``state`` on resume).

    ``train_data``/``val_data``: the events on the device; ``train_sizes``: [E] hits per
    training event; ``val_plan``: this rank's validation batches; ``loss_fn``: another
    model family's loss (None: the regression MSE).
    """
    model = run.model
    device = train_data.inputs.device
    precision = effective_precision(config.precision, device)
    n_events_per_step = events_per_step(config, float(train_sizes.mean()), ctx.world_size)
    peak_lr = scaled_lr(config, n_events_per_step)
    first_batches = epoch_batches(config, train_sizes, 0, ctx)
    lr_at = learning_rate_schedule(
        peak_lr,
        round(config.warmup_epochs * len(first_batches)),
        config.nr_epochs * len(first_batches),
        config.lr_schedule,
    )
    say(
        f"{n_events_per_step:.0f} events per step ({'packed' if packed else 'padded'}, "
        f"{precision}), lr {peak_lr:.3g} ({config.lr_scaling} scaling from {config.lr} "
        f"at {config.batch_size} events)"
    )
    ddp_model: nn.Module = model
    if ctx.world_size > 1:
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_model = ddp_model
    if compile_model:
        sample_plan = BatchPlan.from_batches(first_batches[:1], train_sizes, device)
        step_model = maybe_compile(
            ddp_model, config.compile, sample_plan.batch(train_data, 0, packed), precision
        )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if scaler is not None and state is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    optimisation = Optimisation(run.optimizer, lr_at, run.step, scaler)
    return EpochPlan(
        train_data,
        val_data,
        train_sizes,
        val_plan,
        packed,
        precision,
        step_model,
        optimisation,
        loss_fn,
    )


def _train_loop(
    config: TrainConfig, ctx: DistributedContext, on_epoch: EpochCallback | None = None
) -> tuple[TransformerRegressor, list[float], list[float]]:
    """The epochs of ``train``; returns the model and the losses per epoch.

    The training clock (``--max_minutes``, the ``on_epoch`` seconds) starts once the data
    is on the device: it counts compilation and epochs, not reading the data file.
    """
    device = resolve_device(config.device, ctx.local_rank)
    say = print if ctx.is_main else (lambda *args, **kwargs: None)
    checkpoint_path = Path(config.model_name)
    state = resume_state(config, checkpoint_path, say)
    init = initial_weights(config) if state is None else None
    path, events, (train_idx, val_idx, test_idx) = prepare_data(config)
    run = _new_run(config, state, events, train_idx, device, init)
    if state is not None:
        say(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
    if init is not None:
        say(f"starting from the weights of {init.path} (new optimizer and schedule)")
    say(
        f"data: {path} ({events.n_events} events, {events.n_hits} hits; "
        f"train/val/test {len(train_idx)}/{len(val_idx)}/{len(test_idx)}); "
        f"model: {run.model.n_parameters()} parameters on {device}"
        + (f" x {ctx.world_size} ranks" if ctx.world_size > 1 else "")
    )
    started = time.perf_counter()
    plan = _plan_epochs(
        config, ctx, run, state, events.subset(train_idx), events.subset(val_idx), device, say
    )
    data_record = {
        "path": str(path),
        "data_type": config.data_type,
        "tracks": config.tracks,
        "split_seed": config.seed,
        "split_fractions": list(SPLIT_FRACTIONS),
        "max_nr_hits": config.max_nr_hits,
    }
    run_epochs(
        config,
        ctx,
        run,
        plan,
        lambda epoch: run.checkpoint(epoch, plan.optimisation, config, data_record),
        checkpoint_path,
        started,
        say,
        on_epoch,
    )
    return run.model, run.train_losses, run.val_losses


def run_epochs(
    config: TrainConfig,
    ctx: DistributedContext,
    run: RunState,
    plan: EpochPlan,
    checkpoint_of: Callable[[int], dict[str, Any]],
    checkpoint_path: Path,
    started: float,
    say: Callable[..., None],
    on_epoch: EpochCallback | None = None,
) -> None:
    """The epochs from ``run.start_epoch`` until the last, early stopping or
    ``--max_minutes``; rank 0 writes ``checkpoint_of(epoch)`` to ``checkpoint_path`` after
    each. ``started``: ``time.perf_counter()`` when the training clock started; the time
    spent in ``on_epoch`` is kept off that clock."""
    probe_seconds = 0.0  # time spent in on_epoch, excluded from the training clock
    for epoch in range(run.start_epoch, config.nr_epochs):
        if run.stopped:
            break
        out_of_time = _run_one_epoch(
            config, ctx, run, plan, epoch, time.perf_counter() - started - probe_seconds, say
        )
        run.stopped = run.stopped or out_of_time
        if ctx.is_main:
            save_checkpoint(checkpoint_of(epoch), checkpoint_path)
        if on_epoch is not None and ctx.is_main:
            tick = time.perf_counter()
            on_epoch(epoch, run.model, tick - started - probe_seconds, run.val_losses[-1])
            probe_seconds += time.perf_counter() - tick


def _run_one_epoch(
    config: TrainConfig,
    ctx: DistributedContext,
    run: RunState,
    plan: EpochPlan,
    epoch: int,
    seconds_before: float,
    say: Callable[..., None],
) -> bool:
    """Train and validate one epoch, update the best weights and early stopping; returns
    whether ``--max_minutes`` is used up (``seconds_before``: training time before it)."""
    # Seeding per epoch makes a resumed run draw the same batches as an unbroken one;
    # the rank term gives each rank its own dropout masks.
    torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * ctx.rank)
    batches = BatchPlan.from_batches(
        epoch_batches(config, plan.train_sizes, epoch, ctx),
        plan.train_sizes,
        plan.train_data.inputs.device,
    )
    tick = time.perf_counter()
    progress = config.progress and ctx.is_main
    train_loss = run_epoch(
        plan.step_model,
        plan.train_data,
        batches,
        plan.packed,
        plan.optimisation,
        plan.precision,
        f"epoch {epoch}",
        progress,
        plan.loss_fn,
    )
    val_loss = run_epoch(
        plan.step_model,
        plan.val_data,
        plan.val_plan,
        plan.packed,
        None,
        plan.precision,
        f"epoch {epoch} validation",
        progress,
        plan.loss_fn,
    )
    run.train_losses.append(train_loss)
    run.val_losses.append(val_loss)
    if val_loss <= min(run.val_losses):
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        run.stale_epochs = 0
    else:
        run.stale_epochs += 1
    run.stopped = run.stale_epochs >= config.early_stop
    epoch_seconds = time.perf_counter() - tick
    out_of_time = out_of_training_time(config, seconds_before + epoch_seconds)
    say(
        f"epoch {epoch:3d}  train {train_loss:.5f}  val {val_loss:.5f}  "
        f"({epoch_seconds:.1f} s){'  early stop' if run.stopped else ''}"
        f"{'  time limit' if out_of_time else ''}",
        flush=True,
    )
    return out_of_time


def evaluate_test_split(checkpoint_path: Path, config: TrainConfig) -> dict[str, Any]:
    """Score the best weights on the held-out test split and print the TrackML score."""
    from evaluation.options import EvaluationConfig
    from evaluation.pipeline import evaluate_checkpoint
    from evaluation.test import format_metrics

    metrics = evaluate_checkpoint(
        EvaluationConfig(
            model_name=str(checkpoint_path),
            split="test",
            cluster_jobs=config.cluster_jobs,
            device=str(resolve_device(config.device)),
            threads=config.threads,
        )
    )
    print("test split:", format_metrics(metrics))
    return metrics
