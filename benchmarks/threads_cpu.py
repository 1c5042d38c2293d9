"""Benchmark: one training epoch on the CPU by torch thread count, OpenMP wait policy and load.

Why: torch's default (one OpenMP thread per core, spinning while it waits) collapses when
another process competes for the cores; ``--threads`` chooses the count, and its default
(0: automatic) must not collapse. Each case runs ``training.py`` in a fresh process (the
wait policy must be in the environment before torch is imported) on the main job's data
set and model for one epoch without evaluation, and reads the epoch time it prints. A
competing process is a pure-Python busy loop per ``--competitors`` (one core each).

Usage:
    python benchmarks/threads_cpu.py                       # writes results_threads_cpu.md
    python benchmarks/threads_cpu.py --n_events 1000 --out /tmp/threads.md   # a trial
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_processing.errors import run_cli
from evaluation.options import DefaultsHelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results_threads_cpu.md"
EPOCH_LINE = re.compile(r"epoch\s+0\s+train\s+(\S+)\s+val\s+(\S+)\s+\((\S+) s\)")
BUSY_LOOP = "while True:\n    pass\n"


def run_epoch(threads: int, wait_policy: str | None, n_events: int, folder: Path) -> dict:
    """One epoch of the main job's model in a fresh process; its time and losses."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    command = [
        sys.executable,
        "training.py",
        "--nr_epochs",
        "1",
        "--n_events",
        str(n_events),
        "--no-evaluate",
        "--no-progress",
        "--device",
        "cpu",
        "--threads",
        str(threads),
        "--model_name",
        str(folder / f"t{threads}_{wait_policy}.pt"),
    ]
    tick = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    match = EPOCH_LINE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{result.stderr[-2000:]}")
    return {
        "epoch_s": float(match.group(3)),
        "train_loss": float(match.group(1)),
        "val_loss": float(match.group(2)),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="counts to try")
    parser.add_argument(
        "--wait_policies",
        nargs="+",
        default=["default", "PASSIVE"],
        help="OMP_WAIT_POLICY values (default: unset)",
    )
    parser.add_argument("--competitors", type=int, default=1, help="busy processes under load")
    parser.add_argument("--n_events", type=int, default=4000, help="events of the data set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        # Generate the data set once, outside the timed runs.
        run_epoch(1, None, args.n_events, Path(folder))
        for load in (0, args.competitors):
            busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(load)]
            try:
                for threads in args.threads:
                    for policy in args.wait_policies:
                        value = None if policy == "default" else policy
                        result = run_epoch(threads, value, args.n_events, Path(folder))
                        rows.append((load, threads, policy, result))
                        print(load, threads, policy, result, flush=True)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
    lines = [
        "# One training epoch on the CPU: threads, OpenMP wait policy, competing load",
        "",
        f"Command: `python {shlex.join(['benchmarks/threads_cpu.py', *(argv or sys.argv[1:])])}`"
        f"; {os.cpu_count()} CPU cores; the main job's model (d32, 6 layers) on "
        f"{args.n_events} 3-track linear events (70 % trained), one epoch, no evaluation.",
        "",
        "| busy processes | threads | OMP_WAIT_POLICY | epoch (s) | train loss | val loss |",
        "|---|---|---|---|---|---|",
    ]
    for load, threads, policy, result in rows:
        lines.append(
            f"| {load} | {threads} | {policy} | {result['epoch_s']:.1f} | "
            f"{result['train_loss']:.5f} | {result['val_loss']:.5f} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    run_cli(main)
