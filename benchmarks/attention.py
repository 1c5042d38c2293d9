"""Training and inference throughput: the reference approach against our paths.

The cases are those of SPEC section 8 (random events, published model sizes). Every
number in one table comes from one run on one machine, and the ratios compare paths
measured in that run, interleaved (repeat r of every path runs before repeat r + 1 of
any), so a load change on a shared machine hits all paths alike.

Paths:

* ``reference``: the reference approach: stock ``nn.TransformerEncoder`` (post-norm,
  dropout 0.1), every event padded to max_nr_hits with -1 and a key-padding mask, fp32,
  random batches of the reference batch size (64, 32 or 8 events).
* ``reference, no attn dropout``: the same with dropout 0, to show what attention-weight
  dropout costs (on a CPU it moves SDPA off its fused kernel).
* ``sdpa, sorted``: our model and training loop (``training_steps.run_epoch``) on
  padded, size-sorted batches of the reference batch size (dropout 0.1 on the residual
  and feed-forward branches, none on the attention weights: the model's default since
  benchmarks/results_attention_defaults_cpu.md; ``--attention_dropout`` in training).
* ``flash, packed`` (CUDA) / ``flash, sorted`` (CPU): our model with ``attention=flash``,
  batched by a hit budget of (reference batch size x mean event size); on CUDA packed
  hits through the varlen kernel in bf16 autocast, on a CPU size-sorted padded batches
  in fp32 (what the training loop picks there; no attention-weight dropout, see
  custom_encoder.py).
* CUDA only: ``flash, packed, big step`` (a budget of 276,480 hits per step: 1,024
  events of the 10-50-track case, 55 of 5,000 hits) and the same with ``torch.compile``;
  and, for every other varlen kernel named by ``--flash_kernels`` (default ``cudnn``:
  cuDNN's fused attention on the packed hits), the eager big step with that kernel.

Training = forward, masked MSE, backward, Adam step (fused on CUDA) through the project's
training loop; inference = ``evaluation.inference.predict_track_params`` (the project's
one inference path) for our paths, a no-grad eval forward for the reference.

Usage:
    python benchmarks/attention.py --device cpu --cases small,1k:d32 --models d32,d128
    python benchmarks/attention.py --device cuda            # every default case
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from attention_ops import VARLEN_KERNEL_NAME, flash_kernel_available
from data_processing.batching import (
    Batch,
    BatchPlan,
    DeviceEvents,
    batch_event_indices,
    padded_batch,
)
from data_processing.errors import run_cli
from evaluation.inference import predict_track_params
from evaluation.options import DefaultsHelpFormatter
from model import ModelConfig, TransformerRegressor
from network_options import FLASH_KERNELS
from training_steps import Optimisation, masked_squared_error, maybe_compile, run_epoch

HERE = Path(__file__).resolve().parent
# Hit budget per step of the GPU big-step path: 1,024 events of the 10-50-track case.
BIG_STEP_HITS = 1024 * 270
SORT_WINDOW = 50  # batches per size-sorting window, as in training


@dataclass(frozen=True)
class Case:
    """Event sizes of one benchmark case: uniform in [min_hits, max_hits]."""

    label: str
    min_hits: int
    max_hits: int
    batch: int  # the reference batch size (events)
    hits_step: int = 1  # sizes are multiples of this (9 hits per REDVID track)

    def sizes(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        low, high = self.min_hits // self.hits_step, self.max_hits // self.hits_step
        return rng.integers(low, high + 1, n_events) * self.hits_step


CASES = {
    "small": Case("10-50 tracks (90-450 hits)", 90, 450, 64, hits_step=9),
    "100": Case("100 hits", 100, 100, 64),
    "1k": Case("1,000 hits", 1000, 1000, 32),
    "5k": Case("5,000 hits", 5000, 5000, 8),
    "tml": Case("TML 200-500 (2.2k-5.5k hits)", 2200, 5500, 8),
}
MODELS = {
    "d32": ModelConfig(d_model=32, n_layers=6, n_heads=4, dim_feedforward=128),
    "d128": ModelConfig(d_model=128, n_layers=7, n_heads=4, dim_feedforward=256),
}
# SPEC section 8's cases and the issue's: every case with d32, the big ones with d128 too.
DEFAULT_PAIRS = ("small:d32", "small:d128", "100:d32", "1k:d32", "5k:d32", "5k:d128", "tml:d128")
DEFAULT_PAIRS_T = tuple(tuple(p.split(":")) for p in DEFAULT_PAIRS)


def parse_pairs(text: str, models: str) -> list[tuple[str, str]]:
    """``small,1k:d32`` -> [(small, each of ``models``), (1k, d32)]."""
    pairs = []
    for token in (t for t in text.split(",") if t):
        case, _, model = token.partition(":")
        for model_key in [model] if model else [m for m in models.split(",") if m]:
            if case not in CASES or model_key not in MODELS:
                raise SystemExit(f"unknown case/model {case}:{model_key}")
            pairs.append((case, model_key))
    return pairs


def _load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class ReferenceRegressor(nn.Module):
    """The reference approach: input Linear, stock nn.TransformerEncoder, Linear head."""

    def __init__(self, config: ModelConfig, dropout: float) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            config.dim_feedforward,
            dropout,
            batch_first=True,
        )
        self.input_proj = nn.Linear(config.in_dim, config.d_model)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, config.out_dim)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """x: [B, N, 3], pad_mask: [B, N] True at padding -> [B, N, 3]."""
        return self.head(self.encoder(self.input_proj(x), src_key_padding_mask=pad_mask))


def synthetic_events(sizes: np.ndarray, device: torch.device, seed: int = 0) -> DeviceEvents:
    """Random normalised hits and targets for events of the given sizes."""
    generator = torch.Generator().manual_seed(seed)
    n_hits = int(sizes.sum())
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return DeviceEvents(
        inputs=torch.randn(n_hits, 3, generator=generator).to(device),
        targets=torch.randn(n_hits, 3, generator=generator).to(device),
        loss_mask=torch.ones(n_hits, dtype=torch.bool, device=device),
        offsets=torch.from_numpy(offsets).to(device),
        sizes=torch.from_numpy(sizes.astype(np.int64)).to(device),
    )


# Given the batches to time, does the untimed preparation and returns the timed run.
Prepare = Callable[[list[np.ndarray]], Callable[[], None]]


@dataclass
class Measured:
    """One measured path: a training pass and an inference pass over given batches."""

    name: str
    train: Prepare
    infer: Prepare
    batches: list[np.ndarray]  # the batches this path draws from (shuffled)
    # (events, hits, seconds) of every timed repeat
    train_runs: list[tuple[int, int, float]] = field(default_factory=list)
    infer_runs: list[tuple[int, int, float]] = field(default_factory=list)

    @staticmethod
    def rates(runs: list[tuple[int, int, float]]) -> tuple[float, float]:
        """Pooled (events/s, hits/s): all timed events over all timed seconds."""
        seconds = sum(r[2] for r in runs)
        return sum(r[0] for r in runs) / seconds, sum(r[1] for r in runs) / seconds


def choice_list(allowed: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    """An argparse type: ``"a,b"`` -> ``["a", "b"]``, each name one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown}; use {allowed}")
        return names

    return parse


kernel_list = choice_list(FLASH_KERNELS, "kernel")
model_list = choice_list(tuple(MODELS), "model")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_path(
    name: str, config: ModelConfig, dropout: float, case: Case, data: DeviceEvents, sizes
) -> Measured:
    """Stock encoder, every event padded to max_nr_hits, fp32, random batches.

    The padded batches are built before the clock starts, as if a data loader had them
    ready, so the reference is timed on model work alone.
    """
    device = data.inputs.device
    torch.manual_seed(0)
    model = ReferenceRegressor(config, dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def padded(batches: list[np.ndarray]) -> list[Batch]:
        return [
            padded_batch(data, torch.as_tensor(index, device=device), case.max_hits, -1.0)
            for index in batches
        ]

    def train(batches: list[np.ndarray]) -> Callable[[], None]:
        ready = padded(batches)

        def run() -> None:
            model.train()
            for batch in ready:
                sq_error, n_terms = masked_squared_error(
                    model(batch.x, batch.layout.pad_mask), batch.y, batch.loss_mask
                )
                optimizer.zero_grad(set_to_none=True)
                (sq_error / n_terms).backward()
                optimizer.step()

        return run

    def infer(batches: list[np.ndarray]) -> Callable[[], None]:
        ready = padded(batches)

        @torch.no_grad()
        def run() -> None:
            model.eval()
            for batch in ready:
                model(batch.x, batch.layout.pad_mask)

        return run

    rng = np.random.default_rng(1)
    batches = batch_event_indices(sizes, case.batch, True, rng, sort_window=1)
    return Measured(name, train, infer, batches)


def our_path(
    name: str,
    config: ModelConfig,
    data: DeviceEvents,
    sizes: np.ndarray,
    batch: int,
    hits_per_batch: int,
    precision: str,
    compile_model: bool = False,
) -> Measured:
    """Our model through the project's training loop and inference path.

    Timed: ``training_steps.run_epoch`` over a BatchPlan of the chosen batches (gathering
    each batch from the device-resident events is inside the clock) and
    ``predict_track_params`` on those events.
    """
    device = data.inputs.device
    torch.manual_seed(0)
    model = TransformerRegressor(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    optimisation = Optimisation(optimizer, lambda step: 1e-3)
    packed = model.packs_hits(device)  # as the training loop decides
    rng = np.random.default_rng(1)
    batches = batch_event_indices(
        sizes, batch, True, rng, sort_window=SORT_WINDOW, hits_per_batch=hits_per_batch
    )
    step_model: nn.Module = model
    if compile_model:
        sample = BatchPlan.from_batches(batches[:1], sizes, device).batch(data, 0, packed)
        step_model = maybe_compile(model, True, sample, precision)
        if step_model is model:  # maybe_compile fell back to eager (it logged why)
            name += " (compile FAILED here: eager)"
    amp_dtype = torch.bfloat16 if precision == "bf16" else None
    # Inference batches by the same budget (a padded path: batch x mean size).
    infer_budget = hits_per_batch or int(batch * sizes.mean())

    def train(chosen: list[np.ndarray]) -> Callable[[], None]:
        plan = BatchPlan.from_batches(chosen, sizes, device)
        return lambda: run_epoch(step_model, data, plan, packed, optimisation, precision)

    def infer(chosen: list[np.ndarray]) -> Callable[[], None]:
        subset = _subset(data, np.concatenate(chosen), sizes)

        def run() -> None:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                predict_track_params(step_model, subset, hits_per_batch=infer_budget)

        return run

    return Measured(name, train, infer, batches)


def _subset(data: DeviceEvents, index: np.ndarray, sizes: np.ndarray) -> DeviceEvents:
    """The events ``index`` of ``data`` as their own DeviceEvents (for inference)."""
    sub_sizes = sizes[index]
    offsets = np.concatenate([[0], np.cumsum(sub_sizes)]).astype(np.int64)
    starts = data.offsets.cpu().numpy()[index]
    rows = np.repeat(starts - offsets[:-1], sub_sizes) + np.arange(offsets[-1])
    rows_t = torch.from_numpy(rows).to(data.inputs.device)
    return DeviceEvents(
        inputs=data.inputs[rows_t],
        targets=data.targets[rows_t],
        loss_mask=data.loss_mask[rows_t],
        offsets=torch.from_numpy(offsets).to(data.inputs.device),
        sizes=torch.from_numpy(sub_sizes.astype(np.int64)).to(data.inputs.device),
    )


def _timed(prepare: Prepare, batches: list[np.ndarray], device: torch.device) -> float:
    run = prepare(batches)
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def stratified(batches: list[np.ndarray], sizes: np.ndarray, steps: int, repeats: int):
    """``repeats`` lists of ``steps`` batches that together cover the size range evenly.

    Size-sorted batches differ a lot in cost per event (small events are cheap), so a
    few random batches would give a noisy rate. Batches are ordered by mean event size
    and repeat r, step i takes the one at quantile (i + (r + 0.5) / repeats) / steps.
    """
    order = np.argsort([sizes[b].mean() for b in batches], kind="stable")
    n_timed = steps * repeats
    return [
        [batches[order[int((i * repeats + r + 0.5) / n_timed * len(order))]] for i in range(steps)]
        for r in range(repeats)
    ]


def measure(
    paths: list[Measured], sizes: np.ndarray, steps: int, repeats: int, device: torch.device
) -> list[str]:
    """Warm up every path, then time ``repeats`` interleaved rounds of ``steps`` batches
    (``stratified`` over the batch sizes).

    The warm-up runs the smallest, a middle and the largest batch, so that a compiled
    path has met the range of shapes (and recompiled for it) before the clock starts,
    as the training loop has after its first epoch. A path that fails in its warm-up
    is left out (removed from ``paths``); the returned lines say which and why.
    """
    failed = []
    for path in list(paths):
        by_size = sorted(path.batches, key=lambda b: float(sizes[b].sum()))
        warm = [by_size[0], by_size[len(by_size) // 2], by_size[-1]]
        try:
            for batch in warm:
                _timed(path.train, [batch], device)
                _timed(path.infer, [batch], device)
        except Exception as err:  # e.g. a kernel that refuses these inputs
            traceback.print_exc()
            paths[:] = [other for other in paths if other is not path]
            failed.append(f"{path.name}: FAILED ({type(err).__name__}: {str(err)[:160]})")
    samples = {path.name: stratified(path.batches, sizes, steps, repeats) for path in paths}
    for r in range(repeats):
        for path in paths:
            chosen = samples[path.name][r]
            n_events = sum(len(b) for b in chosen)
            n_hits = int(sum(sizes[b].sum() for b in chosen))
            path.train_runs.append((n_events, n_hits, _timed(path.train, chosen, device)))
            path.infer_runs.append((n_events, n_hits, _timed(path.infer, chosen, device)))
            print(
                f"  {path.name}: repeat {r}: train {n_events / path.train_runs[-1][2]:.1f} "
                f"ev/s, infer {n_events / path.infer_runs[-1][2]:.1f} ev/s",
                flush=True,
            )
    return failed


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (
        f"{cpu}, {torch.get_num_threads()} torch threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
        text += f"; varlen kernel: {VARLEN_KERNEL_NAME}"
    return text


def run_case(
    case_key: str, model_key: str, device: torch.device, args: argparse.Namespace
) -> tuple[list[tuple[str, str, Measured, int]], list[str]]:
    """All paths of one (case, model): table rows (case, model, path, events per step)
    and a note for every path that failed."""
    case, base = CASES[case_key], MODELS[model_key]
    rng = np.random.default_rng(0)
    big = device.type == "cuda"
    mean_hits = (case.min_hits + case.max_hits) / 2
    n_pool = args.pool_events or max(
        SORT_WINDOW * case.batch, round(20 * BIG_STEP_HITS / mean_hits) if big else 0
    )
    sizes = case.sizes(n_pool, rng)
    data = synthetic_events(sizes, device)
    mean = float(sizes.mean())
    budget = int(case.batch * mean)
    fast_precision = "bf16" if device.type == "cuda" else "fp32"
    notes: list[str] = []  # paths left out, and why

    def config(attention: str, dropout: float = 0.1, flash_kernel: str = "auto") -> ModelConfig:
        return ModelConfig(
            **{
                **base.to_dict(),
                "attention": attention,
                "dropout": dropout,
                "flash_kernel": flash_kernel,
            }
        )

    paths = [
        (reference_path("reference", base, 0.1, case, data, sizes), case.batch),
        (reference_path("reference, no attn dropout", base, 0.0, case, data, sizes), case.batch),
        (our_path("sdpa, sorted", config("sdpa"), data, sizes, case.batch, 0, "fp32"), case.batch),
        (
            our_path(
                f"flash, {'packed' if device.type == 'cuda' else 'sorted'}, {fast_precision}",
                config("flash"),
                data,
                sizes,
                case.batch,
                budget,
                fast_precision,
            ),
            case.batch,
        ),
    ]
    if big:
        big_step_events = max(1, round(BIG_STEP_HITS / mean))
        for compile_model in (False, True):
            label = "flash, packed, bf16, big step" + (", compiled" if compile_model else "")
            path = our_path(
                label,
                config("flash"),
                data,
                sizes,
                big_step_events,
                BIG_STEP_HITS,
                "bf16",
                compile_model,
            )
            paths.append((path, big_step_events))
        head_dim = base.d_model // base.n_heads
        for kernel in (k for k in args.flash_kernels if k != "auto"):
            if not flash_kernel_available(head_dim, kernel):
                notes.append(f"flash, big step, {kernel} kernel: no such kernel here")
                continue
            path = our_path(
                f"flash, packed, bf16, big step, {kernel} kernel",
                config("flash", flash_kernel=kernel),
                data,
                sizes,
                big_step_events,
                BIG_STEP_HITS,
                "bf16",
            )
            paths.append((path, big_step_events))
    print(f"{case.label}, {model_key}: {n_pool} events in the pool, mean {mean:.0f} hits")
    measured = [p for p, _ in paths]
    failed = measure(measured, sizes, args.steps, args.repeats, device)
    kept = {id(p) for p in measured}
    rows = [(case.label, model_key, p, per_step) for p, per_step in paths if id(p) in kept]
    return rows, [f"{case.label}, {model_key}, {line}" for line in notes + failed]


def markdown(rows, device: torch.device, command: str, skipped: list[str], args) -> str:
    lines = [
        f"# Attention and training throughput ({device.type})",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {datetime.date.today().isoformat()}; machine: {machine_description(device)}",
        "",
        f"Load average (1/5/15 min) of the machine, shared with other jobs: {args.load}.",
        "",
        f"Rates pooled over {args.repeats} interleaved repeats of {args.steps} step(s) each "
        "(batches stratified over the event-size range, after a warm-up on the smallest, "
        "a middle and the largest batch): all "
        "timed events (hits) over all timed seconds. 'x ref' = events/s over the "
        "reference's in the same run and case (blank if the reference failed). "
        "'events/step': the reference batch size, or the hit budget in events of mean "
        "size; in brackets the mean number of events per timed step. A compiled path "
        "infers with the compiled model too.",
        "",
        "| case | model | path | events/step (mean timed) | train ev/s | train hits/s | "
        "train x ref "
        "| infer ev/s | infer hits/s | infer x ref |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference: dict[tuple[str, str], tuple[float, float]] = {}
    for case_label, model_key, path, per_step in rows:
        train, train_hits = Measured.rates(path.train_runs)
        infer, infer_hits = Measured.rates(path.infer_runs)
        if path.name == "reference":
            reference[(case_label, model_key)] = (train, infer)
        # A reference that failed leaves its case's ratios blank, not the table unwritten.
        ref_train, ref_infer = reference.get((case_label, model_key), (float("nan"),) * 2)
        # Events per step as timed (hit-budget steps hold a varying number of events).
        timed_per_step = sum(r[0] for r in path.train_runs) / (len(path.train_runs) * args.steps)
        lines.append(
            f"| {case_label} | {model_key} | {path.name} | {per_step} ({timed_per_step:,.0f}) | "
            f"{train:,.1f} | {train_hits:,.0f} | {train / ref_train:.2f} | {infer:,.1f} | "
            f"{infer_hits:,.0f} | {infer / ref_infer:.2f} |"
        )
    if skipped:
        lines += ["", "Not measured, and notes:", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--cases",
        default="",
        help=f"comma-separated CASE or CASE:MODEL of {list(CASES)} x {list(MODELS)} "
        f"(default: {','.join(DEFAULT_PAIRS)})",
    )
    parser.add_argument("--models", default="d32,d128", help="models of a bare CASE")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (0: automatic)")
    parser.add_argument("--pool_events", type=int, default=0, help="0: automatic")
    parser.add_argument("--out", default="", help="markdown file (default by device)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--flash_kernels",
        type=kernel_list,
        default="auto,cudnn",
        help=f"CUDA: varlen kernels of {list(FLASH_KERNELS)}; each one other than auto adds "
        "an eager big-step row",
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the table's notes (repeatable)"
    )
    args = parser.parse_args(argv)
    device_name = args.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    on_cpu = device.type == "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (2 if on_cpu else 10)
    args.repeats = args.repeats or (2 if on_cpu else 5)
    pairs = parse_pairs(args.cases or ",".join(DEFAULT_PAIRS), args.models)
    if not pairs:
        raise SystemExit("no case to run (--cases)")
    load_before = _load_average()
    rows = []
    failed = []
    out = args.out or HERE / f"results_attention_{device.type}.md"
    command = command_line("benchmarks/attention.py", argv)
    for done, (case_key, model_key) in enumerate(pairs, 1):
        try:
            case_rows, case_failures = run_case(case_key, model_key, device, args)
            rows.extend(case_rows)
            failed.extend(case_failures)
        except Exception as err:  # one failing case must not lose the others' timings
            traceback.print_exc()
            failed.append(f"{CASES[case_key].label}, {model_key}: FAILED ({err!r:.200})")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        # The table so far, after every case: a run cut short keeps what it measured.
        args.load = f"{load_before} before, {_load_average()} after"
        not_run = [
            f"{CASES[c].label}, {m}: not run" for c, m in DEFAULT_PAIRS_T if (c, m) not in pairs
        ]
        not_yet = [f"{CASES[c].label}, {m}: not reached" for c, m in pairs[done:]]
        text = markdown(rows, device, command, not_run + not_yet + failed + args.note, args)
        Path(out).write_text(text)
    print(text)
    return Path(out)


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``script`` with ``argv`` (None: this process's arguments)."""
    return "python " + shlex.join([script, *(sys.argv[1:] if argv is None else argv)])


def write_table(text: str, out: str | Path) -> Path:
    """Write a results table to ``out``, print it and return the path."""
    path = Path(out)
    path.write_text(text)
    print(text)
    return path


if __name__ == "__main__":
    run_cli(main)
