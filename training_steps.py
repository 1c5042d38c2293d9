"""The parts of a training run below the loop: devices and ranks, one epoch of steps,
the loss, the learning-rate schedule, mixed precision and compilation.

``training_loop.py`` holds the loop over epochs (``training_config.py`` the settings,
``training.py`` the command line); it calls these functions, and the benchmarks time
them directly. Nothing here reads files or knows the settings dataclass (only the
torch-free names of its choices, ``PRECISION_NAMES`` and ``LR_SCHEDULES``).

Speed on a GPU: nothing inside a step waits for the device (the loss is accumulated on
the device and read once per epoch); the learning rate is a host float set per step.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from data_processing.batching import Batch, BatchPlan, DeviceEvents
from training_config import LR_SCHEDULES, PRECISION_NAMES

# Autocast dtype of each --precision (None: plain fp32); the names are training_config's.
PRECISIONS: dict[str, torch.dtype | None] = dict(
    zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16), strict=True)
)
# A model family's loss of one batch: (model, batch) -> (loss sum, number of terms).
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Tensor]]

log = logging.getLogger(__name__)


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
    progress: bool = True,
    loss_fn: LossFn | None = None,
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
        description: the progress bar's label.
        progress: show a progress bar (steps/s, ETA) on a terminal; False: never.
        loss_fn: ``loss_fn(model, batch) -> (loss sum, number of terms)`` (0-d tensors)
            for another model family (e.g. tracker/); None: the regressor's masked MSE.

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
        for i in tqdm(
            range(len(plan)),
            desc=description,
            unit="step",
            leave=False,
            disable=None if progress else True,
        ):
            batch = plan.batch(data, i, packed)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if loss_fn is None:
                    pred = model(batch.x, batch.layout)
                else:
                    sq_error, n_terms = loss_fn(model, batch)
            if loss_fn is None:
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
