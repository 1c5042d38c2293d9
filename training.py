"""Train the TransformerRegressor (exact attention) and evaluate it on the test split.

``python training.py`` with no arguments is the project's main job: it generates (once)
a small REDVID-style data set of 3-track linear events under ./data, trains, evaluates
on the held-out test split and prints the TrackML score.

This file holds the one training loop of the project; ``training_flash.py`` (FlashAttention
on packed hits, bf16) and the refiner reuse it. The loop is built for speed on a GPU:
the data set lives on the device, an epoch's batches are uploaded in one copy, nothing
inside a step waits for the device (the loss is accumulated on the device and read once
per epoch), optional bf16/fp16 autocast, fused Adam on CUDA and optional torch.compile.

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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from checkpoint import load_checkpoint, save_checkpoint
from custom_encoder import (
    ATTENTION_BACKENDS,
    FEEDFORWARDS,
    FLASH_KERNELS,
    NORM_PLACEMENTS,
    EncoderOptions,
)
from data_processing.dataset import (
    DATA_TYPES,
    Batch,
    BatchPlan,
    DeviceEvents,
    EventSet,
    Normaliser,
    batch_event_indices,
    load_events,
    split_events,
)
from data_processing.redvid import SimulationConfig, cached_dataset_path, ensure_dataset
from evaluation.clustering import ClusteringConfig, published_setting
from model import ModelConfig, TransformerRegressor

REPO_ROOT = Path(__file__).resolve().parent
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
# Autocast dtype of each --precision (None: plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
LR_SCALINGS = ("sqrt", "linear", "none")
LR_SCHEDULES = ("constant", "cosine")

log = logging.getLogger(__name__)


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
    norm_first: bool = False  # same as --norm pre (kept for older scripts)
    attention: str = "sdpa"  # math | sdpa (padded batches) | flash (packed hits)
    flash_kernel: str = "auto"  # flash's varlen kernel: auto | flash_attn | torch | cudnn
    # Encoder variants (custom_encoder.EncoderOptions); the defaults are the published model.
    norm: str = "post"  # post | pre | hybrid (QK-norm + post-norm feed-forward)
    layer_scale_init: float = 0.0  # LayerScale init value; 0: off
    value_residual: bool = False  # mix every layer's attention values with the first's
    qk_norm: bool = False  # LayerNorm on queries and keys
    feedforward: str = "relu"  # relu | gelu | swiglu
    n_registers: int = 0  # learned register tokens per event
    attention_window: int = 0  # local attention: neighbours per side in phi order; 0: full
    hits_per_batch: int = 0  # hit budget per step; 0: batch_size events per step
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast (CUDA; fp32 on a CPU)
    compile: bool = False  # torch.compile the model (falls back to eager if it fails)
    lr_scaling: str = "sqrt"  # lr rule when a step holds more than batch_size events
    warmup_epochs: float = 0.0  # linear learning-rate warm-up
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 at the last epoch)
    max_minutes: float = 0.0  # stop after the epoch that crosses this training time; 0: off
    min_cluster_size: int | None = None  # None: published setting for the data set
    min_samples: int | None = None
    cluster_jobs: int = -1
    evaluate: bool = True

    def model_config(
        self,
        in_dim: int,
        out_dim: int,
        xy_mean_std: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0),
    ) -> ModelConfig:
        """The model this run trains; ``xy_mean_std`` from the input normaliser (for phi)."""
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
            flash_kernel=self.flash_kernel,
            # The encoder options carry the same names here and in ModelConfig.
            **{f.name: getattr(self, f.name) for f in fields(EncoderOptions)},
            xy_mean_std=xy_mean_std,
        )

    def clustering_config(self) -> ClusteringConfig:
        published = published_setting(self.data_type, self.tracks) or (5, 2)
        return ClusteringConfig(
            min_cluster_size=self.min_cluster_size or published[0],
            min_samples=self.min_samples or published[1],
            n_jobs=self.cluster_jobs,
        )


@dataclass
class DistributedContext:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process called init_process_group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group when launched by torchrun (env WORLD_SIZE > 1).

    NCCL when the ranks train on CUDA, gloo on CPUs. A group that is already
    initialised (by a caller) is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        on_cuda = resolve_device(device_name, local_rank).type == "cuda"
        if on_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA if present, else CPU; a bare ``cuda`` means this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def simulation_config(config: TrainConfig) -> SimulationConfig:
    """The REDVID-style simulation of the default data set of ``config``."""
    return SimulationConfig(
        n_events=config.n_events,
        tracks=config.tracks,
        track_type=config.data_type,
        seed=config.seed,
    )


def data_folder() -> Path:
    """The repository's git-ignored ``data/`` folder, where simulated sets are cached."""
    return REPO_ROOT / "data"


def default_data_path(config: TrainConfig) -> Path:
    """Where the generated default data set is cached (``data_folder``)."""
    return cached_dataset_path(simulation_config(config), data_folder())


def ensure_data(config: TrainConfig) -> Path:
    """The data file to train on; generates the default simulated set once if needed."""
    if config.data_path is not None:
        return Path(config.data_path)
    if config.data_type == "trackml":
        raise ValueError("--data_type trackml needs --data_path (see data_processing.trackml_data)")
    return ensure_dataset(simulation_config(config), data_folder())


def masked_squared_error(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of squared errors over hits where ``mask`` is True, and the number of terms.

    pred, target: [..., K]; mask: [...] bool. Returned as 0-d fp32 tensors (no host
    sync); the error is computed in fp32 whatever the autocast dtype of ``pred``.
    """
    weights = mask.to(torch.float32)[..., None]
    return ((pred.float() - target) ** 2 * weights).sum(), weights.sum() * pred.shape[-1]


@dataclass
class Optimisation:
    """What a training step needs besides the model and the batch.

    ``lr_at(step)`` is the learning rate of global optimizer step ``step`` (counted
    from the start of the run, across resumes); ``scaler`` is set for fp16 only.
    """

    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    step: int = 0
    scaler: torch.amp.GradScaler | None = None


def run_epoch(
    model: nn.Module,
    data: DeviceEvents,
    plan: BatchPlan,
    packed: bool,
    optimisation: Optimisation | None = None,
    precision: str = "fp32",
    description: str = "",
) -> float:
    """One pass over the batches of ``plan`` (training when ``optimisation`` is given).

    Args:
        model: the regressor, possibly wrapped by DDP and/or torch.compile.
        data: the events the plan indexes, on the model's device.
        plan: this process's batches (its shard, under DDP).
        packed: packed batches (flash) or padded ones.
        optimisation: optimizer, learning-rate schedule and step counter; None to
            evaluate without gradients.
        precision: key of ``PRECISIONS``: the autocast dtype of the forward pass.

    Returns:
        The mean squared error per target value over all real, non-noise hits (summed
        over every rank under DDP). The loss is accumulated on the device; the one host
        sync is at the end. fp16 is the exception: its GradScaler reads the inf check.
    """
    training = optimisation is not None
    model.train(training)
    device = data.inputs.device
    amp_dtype = PRECISIONS[precision]
    totals = torch.zeros(2, device=device)  # [sum of squared errors, number of terms]
    with torch.set_grad_enabled(training):
        for i in tqdm(range(len(plan)), desc=description, leave=False, disable=None):
            batch = plan.batch(data, i, packed)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = model(batch.x, batch.layout)
            sq_error, n_terms = masked_squared_error(pred, batch.y, batch.loss_mask)
            if training:
                _optimizer_step(optimisation, sq_error / n_terms.clamp(min=1))
            totals += torch.stack([sq_error.detach(), n_terms])
    if dist.is_initialized():
        dist.all_reduce(totals)
    return float(totals[0] / totals[1].clamp(min=1))


def _optimizer_step(optimisation: Optimisation, loss: Tensor) -> None:
    """Backward and one optimizer step at the scheduled learning rate."""
    optimizer = optimisation.optimizer
    lr = optimisation.lr_at(optimisation.step)
    for group in optimizer.param_groups:
        group["lr"] = lr  # a host float: setting it costs no device sync
    optimizer.zero_grad(set_to_none=True)
    if optimisation.scaler is None:
        loss.backward()
        optimizer.step()
    else:
        optimisation.scaler.scale(loss).backward()
        optimisation.scaler.step(optimizer)
        optimisation.scaler.update()
    optimisation.step += 1


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


def learning_rate_schedule(
    peak_lr: float, warmup_steps: int, total_steps: int = 0, shape: str = "constant"
) -> Callable[[int], float]:
    """Learning rate of optimizer step ``step``: a linear warm-up to ``peak_lr`` over
    ``warmup_steps`` steps, then constant or (``shape="cosine"``) a half cosine from
    ``peak_lr`` down to 0 at step ``total_steps``."""
    if shape not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {shape!r}; use one of {LR_SCHEDULES}")

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return peak_lr * (step + 1) / warmup_steps
        if shape == "constant" or total_steps <= warmup_steps:
            return peak_lr
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    return lr_at


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


def effective_precision(precision: str, device: torch.device) -> str:
    """Autocast is used on CUDA only; elsewhere fp32, with a one-line notice."""
    if precision != "fp32" and device.type != "cuda":
        log.warning(
            "precision %s: mixed precision needs CUDA; training in fp32 on %s", precision, device
        )
        return "fp32"
    return precision


def maybe_compile(model: nn.Module, enabled: bool, sample: Batch, precision: str) -> nn.Module:
    """``torch.compile(model)`` if ``enabled`` and it works here, else ``model`` (eager).

    Compilation happens lazily, so the compiled model is run forward and backward once
    on ``sample`` to surface any failure now; the gradients are discarded.
    """
    if not enabled:
        return model
    amp_dtype = PRECISIONS[precision]
    try:
        compiled = torch.compile(model, dynamic=True)
        with torch.autocast(sample.x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = compiled(sample.x, sample.layout)
        pred.float().sum().backward()
    except Exception as err:  # any compiler failure (no C++ compiler, unsupported op, ...)
        log.warning(
            "torch.compile failed (%s: %s); running eager",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
        return model
    finally:
        model.zero_grad(set_to_none=True)
    return compiled


def xy_mean_std(events: EventSet, normaliser: Normaliser) -> tuple[float, float, float, float]:
    """The input normaliser's (mean x, std x, mean y, std y), from which the model
    recovers each hit's phi (for local attention); inputs 0 and 1 must be x and y."""
    if tuple(events.input_names[:2]) != ("x", "y"):
        raise ValueError(f"inputs 0 and 1 must be x and y, not {events.input_names[:2]}")
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
    path = ensure_data(config)
    events = load_events(path, config.data_type, config.max_nr_hits)
    return path, events, split_events(events.n_events, SPLIT_FRACTIONS, config.seed)


def validate_config(config: TrainConfig) -> None:
    """Reject settings the CLI's ``choices`` would reject, for programmatic callers."""
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"unknown {name} {getattr(config, name)!r}; use one of {allowed}")
    if config.hits_per_batch < 0 or config.batch_size < 1:
        raise ValueError("batch_size must be >= 1 and hits_per_batch >= 0")


# Model-config fields a resumed run may change: run-time choices and data statistics.
RESUME_FREE_MODEL_FIELDS = ("attention", "flash_kernel", "xy_mean_std")


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
        raise ValueError(
            f"{path}: an inference-only (shipped) checkpoint holds no optimizer "
            "state and cannot be resumed; train to a new --model_name"
        )
    stored_data = state["data"]
    stored_file = Path(stored_data["path"])
    if config.data_path is None:
        # A generated set: its name holds every setting that made it, and the cache may
        # sit elsewhere on another machine.
        same_file = default_data_path(config).name == stored_file.name
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
    stored_model = state["model_config"]
    model_now = config.model_config(stored_model["in_dim"], stored_model["out_dim"]).to_dict()
    differing += [
        f"model {name} {stored_model[name]!r} in the checkpoint, {model_now[name]!r} now"
        for name in model_now
        if name not in RESUME_FREE_MODEL_FIELDS
        and name in stored_model
        and stored_model[name] != model_now[name]
    ]
    if differing:
        raise ValueError(
            f"{path}: cannot resume with other data or model settings ("
            + "; ".join(differing)
            + "); use the checkpoint's settings or train to a new --model_name"
        )


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
    counted in the training seconds it is given.
    """
    validate_config(config)
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


def _train_loop(
    config: TrainConfig, ctx: DistributedContext, on_epoch: EpochCallback | None = None
) -> tuple[TransformerRegressor, list[float], list[float]]:
    """The epochs of ``train``; returns the model and the losses per epoch.

    The training clock (``--max_minutes``, the ``on_epoch`` seconds) starts once the data
    is on the device: it counts compilation and epochs, not reading the data file.
    """
    probe_seconds = 0.0  # time spent in on_epoch, excluded from the training clock
    device = resolve_device(config.device, ctx.local_rank)
    say = print if ctx.is_main else (lambda *args, **kwargs: None)
    checkpoint_path = Path(config.model_name)
    state = load_checkpoint(checkpoint_path) if config.resume and checkpoint_path.exists() else None
    if config.resume and state is None:
        say(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch")
    if not config.resume and checkpoint_path.exists():
        say(f"{checkpoint_path} exists and will be overwritten (--resume continues it)")
    if state is not None:
        check_resumable(state, config, checkpoint_path)
    path, events, (train_idx, val_idx, test_idx) = prepare_data(config)

    if state is None:
        normaliser = Normaliser.fit(events.subset(train_idx))
        model_config = config.model_config(
            len(events.input_names), len(events.target_names), xy_mean_std(events, normaliser)
        )
    else:
        normaliser = Normaliser.from_dict(state["normaliser"])
        # The attention backend and kernel are run-time choices: a resumed run may
        # switch them.
        model_config = ModelConfig.from_dict(
            {
                **state["model_config"],
                "attention": config.attention,
                "flash_kernel": config.flash_kernel,
            }
        )
    torch.manual_seed(config.seed)
    model = TransformerRegressor(model_config).to(device)
    fused = device.type == "cuda"  # one kernel for the whole Adam update
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    train_losses: list[float] = []
    val_losses: list[float] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch, stale_epochs, stopped, step = 0, 0, False, 0
    if state is not None:
        model.load_state_dict(state["model_state_dict"])
        optimizer_state = state["optimizer_state_dict"]
        # The checkpoint may come from another device. Set the flag before loading:
        # load_state_dict puts Adam's step counters where the saved flag says (on the
        # device for fused Adam, on the host otherwise).
        for group in optimizer_state["param_groups"]:
            group["fused"] = fused
        optimizer.load_state_dict(optimizer_state)
        best_state = state["best_model_state_dict"]
        train_losses, val_losses = list(state["train_losses"]), list(state["val_losses"])
        start_epoch, stale_epochs = state["epoch"] + 1, state.get("stale_epochs", 0)
        # Early stopping is judged again with this run's --early_stop; a time-limit stop
        # is not carried over (continuing after it is what --resume is for).
        stopped, step = stale_epochs >= config.early_stop, state.get("step", 0)
        say(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
    say(
        f"data: {path} ({events.n_events} events, {events.n_hits} hits; "
        f"train/val/test {len(train_idx)}/{len(val_idx)}/{len(test_idx)}); "
        f"model: {model.n_parameters()} parameters on {device}"
        + (f" x {ctx.world_size} ranks" if ctx.world_size > 1 else "")
    )

    train_set, val_set = events.subset(train_idx), events.subset(val_idx)
    train_data = DeviceEvents.from_events(train_set, normaliser, device)
    val_data = DeviceEvents.from_events(val_set, normaliser, device)
    started = time.perf_counter()
    packed = model.packs_hits(device)
    precision = effective_precision(config.precision, device)
    val_batches = batch_event_indices(
        val_set.sizes, 4 * config.batch_size, False, hits_per_batch=4 * config.hits_per_batch
    )
    val_plan = BatchPlan.from_batches(
        val_batches[ctx.rank :: ctx.world_size], val_set.sizes, device
    )
    n_events_per_step = events_per_step(config, float(train_set.sizes.mean()), ctx.world_size)
    peak_lr = scaled_lr(config, n_events_per_step)
    first_batches = epoch_batches(config, train_set.sizes, 0, ctx)
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
    sample_plan = BatchPlan.from_batches(first_batches[:1], train_set.sizes, device)
    step_model = maybe_compile(
        ddp_model, config.compile, sample_plan.batch(train_data, 0, packed), precision
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if scaler is not None and state is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    optimisation = Optimisation(optimizer, lr_at, step, scaler)
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
        # Seeding per epoch makes a resumed run draw the same batches as an unbroken one;
        # the rank term gives each rank its own dropout masks.
        torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * ctx.rank)
        plan = BatchPlan.from_batches(
            epoch_batches(config, train_set.sizes, epoch, ctx), train_set.sizes, device
        )
        tick = time.perf_counter()
        train_losses.append(
            run_epoch(
                step_model, train_data, plan, packed, optimisation, precision, f"epoch {epoch}"
            )
        )
        val_losses.append(run_epoch(step_model, val_data, val_plan, packed, None, precision))
        if val_losses[-1] <= min(val_losses):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale_epochs = 0
        else:
            stale_epochs += 1
        stopped = stale_epochs >= config.early_stop
        out_of_time = out_of_training_time(config, time.perf_counter() - started - probe_seconds)
        say(
            f"epoch {epoch:3d}  train {train_losses[-1]:.5f}  val {val_losses[-1]:.5f}  "
            f"({time.perf_counter() - tick:.1f} s){'  early stop' if stopped else ''}"
            f"{'  time limit' if out_of_time else ''}",
            flush=True,
        )
        stopped = stopped or out_of_time
        if ctx.is_main:
            save_checkpoint(
                {
                    "epoch": epoch,
                    "step": optimisation.step,
                    "model_state_dict": model.state_dict(),
                    "best_model_state_dict": best_state,
                    "optimizer_state_dict": optimizer.state_dict(),
                    "train_losses": train_losses,
                    "val_losses": val_losses,
                    "stale_epochs": stale_epochs,
                    "stopped": stopped,
                    "grad_scaler": scaler.state_dict() if scaler is not None else None,
                    "model_config": model_config.to_dict(),
                    "normaliser": normaliser.to_dict(),
                    "train_config": asdict(config),
                    "clustering": asdict(config.clustering_config()),
                    "data": data_record,
                },
                checkpoint_path,
            )
        if on_epoch is not None and ctx.is_main:
            tick = time.perf_counter()
            on_epoch(epoch, model, tick - started - probe_seconds, val_losses[-1])
            probe_seconds += time.perf_counter() - tick
    return model, train_losses, val_losses


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


CHOICES: dict[str, tuple[str, ...]] = {
    "data_type": DATA_TYPES,
    "attention": ATTENTION_BACKENDS,
    "flash_kernel": FLASH_KERNELS,
    "norm": NORM_PLACEMENTS,
    "feedforward": FEEDFORWARDS,
    "precision": tuple(PRECISIONS),
    "lr_scaling": LR_SCALINGS,
    "lr_schedule": LR_SCHEDULES,
}
OPTIONAL_INTS = ("min_cluster_size", "min_samples")


def build_arg_parser(defaults: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The training CLI: one option per TrainConfig field, with the same name."""
    defaults = defaults or TrainConfig()
    parser = argparse.ArgumentParser(
        description="Train the TransformerRegressor and evaluate it on the test split "
        f"(attention {defaults.attention}, precision {defaults.precision} unless set)."
    )
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
    # Under torchrun every rank runs this; one of them speaks.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        print("config:", json.dumps(asdict(config), sort_keys=True))
    result = train(config)
    if is_main:
        print(f"finished in {result.seconds:.1f} s; checkpoint {result.checkpoint}")
    return result


if __name__ == "__main__":
    main()
