"""The benchmark scripts run and report sound numbers (tiny sizes, on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks import attention_kernels


def test_attention_kernels_table_and_profile(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = attention_kernels.main(
            [
                "--device", "cpu", "--n_hits", "40", "--events", "3", "--head_dims", "8",
                "--repeats", "1", "--profile", "--profile_models", "d32", "--profile_steps", "1",
                "--out", str(tmp_path / "kernels.md"),
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| varlen ")]
    rows += [line.split(" | ") for line in text.splitlines() if line.startswith("| dense ")]
    assert len(rows) == 4 and "failed" not in text
    # Every kernel computes the same attention as the first (exact fp32 paths here).
    assert all(float(row[-1].rstrip(" |")) < 1e-5 for row in rows)
    assert all(float(row[2]) > 0 and float(row[5]) > 0 for row in rows)  # ms forward, fwd+bwd
    # The profile found the attention operators among the step's time.
    profile = text.split("## Profile: d32")[1]
    attention_row = next(line for line in profile.splitlines() if line.startswith("| attention"))
    assert float(attention_row.split(" | ")[1]) > 0


def test_a_failing_path_is_left_out_and_named() -> None:
    from benchmarks.attention import Measured, measure

    sizes = np.array([3, 4, 5, 6])
    batches = [np.array([0, 1]), np.array([2, 3])]

    def works(chosen: list[np.ndarray]):
        return lambda: None

    def refuses(chosen: list[np.ndarray]):
        raise RuntimeError("no kernel for these inputs")

    good = Measured("good", works, works, batches)
    bad = Measured("bad", refuses, works, batches)
    paths = [good, bad]
    failed = measure(paths, sizes, steps=1, repeats=2, device=torch.device("cpu"))
    assert paths == [good] and len(good.train_runs) == 2 and not bad.train_runs
    assert failed == ["bad: FAILED (RuntimeError: no kernel for these inputs)"]


def test_table_is_written_when_the_reference_failed() -> None:
    import argparse

    from benchmarks.attention import Measured, markdown

    ours = Measured("sdpa, sorted", None, None, [])
    ours.train_runs = [(10, 1000, 0.5), (10, 1000, 0.5)]
    ours.infer_runs = [(10, 1000, 0.1), (10, 1000, 0.1)]
    args = argparse.Namespace(load="n/a", repeats=2, steps=5)
    text = markdown([("100 hits", "d32", ours, 64)], torch.device("cpu"), "cmd", [], args)
    row = next(line for line in text.splitlines() if "sdpa, sorted" in line)
    # 20 events in 1 s; 2 timed events per step; no reference: blank ratios.
    assert row.split(" | ")[3:6] == ["64 (2)", "20.0", "2,000"]
    assert row.count("nan") == 2
