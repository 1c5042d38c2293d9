"""End-to-end tests of evaluation/test.py and evaluation/performance_stats.py.

A tiny model trained for two epochs on 300 generated events (seconds on a CPU) stands in
for a real checkpoint: these tests check the plumbing (files, keys, tables), not quality.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import training
from data_processing.dataset import EventSet, Normaliser
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation import performance_stats
from evaluation import test as evaluation_test
from evaluation.inference import regression_errors, score_reconstruction

MIN_PNG_BYTES = 10_000
SCORE_KEYS = {
    "trackml_score",
    "trackml_score_std",
    "n_events",
    "perfect",
    "double_majority",
    "lhc",
    "fake_rate",
    "duplicate_rate",
    "n_particles",
    "n_tracks",
    "efficiencies",
    "regression",
    "clustering",
    "timings_s",
}


def _tiny_config(data: Path, checkpoint: Path, data_type: str, epochs: int):
    return training.TrainConfig(
        data_path=str(data),
        data_type=data_type,
        model_name=str(checkpoint),
        nr_epochs=epochs,
        batch_size=32,
        embedding_size=16,
        hidden_dim=32,
        nr_enc_layers=2,
        nr_heads=2,
        evaluate=False,
        cluster_jobs=1,
        device="cpu",
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch model on 300 linear 3-track events (test split: 45 events)."""
    folder = tmp_path_factory.mktemp("linear")
    data = generate_dataset(
        SimulationConfig(n_events=300, tracks="3", track_type="linear", seed=5),
        folder / "lin3.csv",
        progress=False,
    )
    training.train(_tiny_config(data, folder / "m.pt", "linear", epochs=2))
    return folder / "m.pt"


@pytest.fixture(scope="module")
def trackml_checkpoint(trackml_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch model on 20 sub-events (10-20 particles, with noise) of the sample."""
    from data_processing.trackml_data import (
        SubEventConfig,
        build_sub_events,
        read_event,
        write_hit_table,
    )

    folder = tmp_path_factory.mktemp("trackml")
    event = read_event(trackml_sample_dir / "event000000001")
    table = build_sub_events(event, SubEventConfig((10, 20), 20, keep_noise=True, seed=1))
    write_hit_table(table, folder / "tml.parquet")
    training.train(_tiny_config(folder / "tml.parquet", folder / "t.pt", "trackml", epochs=1))
    return folder / "t.pt"


def strict_json(path: Path) -> dict:
    """Parse JSON refusing NaN/Infinity (not JSON, though Python writes them by default)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_png(path: Path) -> None:
    assert path.exists(), path
    assert path.stat().st_size > MIN_PNG_BYTES, (path, path.stat().st_size)


def test_test_py_writes_metrics_json_and_figures(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    metrics = evaluation_test.main(
        ["--model_name", str(checkpoint), "--cluster_jobs", "1", "--output_dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert printed.startswith("config: {")
    assert "[trackformers] perfect" in printed and "MSE (normalised targets)" in printed
    assert "TrackML score:" in printed.strip().splitlines()[-2]  # then the "wrote" line
    assert SCORE_KEYS <= set(metrics)
    assert metrics["n_events"] == 45  # 15 % of 300
    assert 0.0 <= metrics["trackml_score"] <= 1.0
    assert metrics["definition"] == "trackformers"
    assert set(metrics["efficiencies"]) == {"trackformers"}  # REDVID: no layers, no pT
    assert "efficiency_vs_pt" not in metrics
    assert set(metrics["regression"]["mse"]) == {"theta", "sin_phi", "cos_phi"}

    written = strict_json(out / "metrics.json")
    assert written["trackml_score"] == metrics["trackml_score"]
    assert SCORE_KEYS <= set(written)
    names = ["heatmap_theta", "heatmap_sin_phi", "heatmap_cos_phi", "heatmaps", "event_display"]
    assert sorted(Path(p).name for p in written["figures"]) == sorted(f"{n}.png" for n in names)
    for name in names:
        assert_png(out / f"{name}.png")


def test_training_entry_point_and_options(checkpoint: Path) -> None:
    # training.py calls exactly this.
    metrics = evaluation_test.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(
            model_name=str(checkpoint), split="test", cluster_jobs=1, device="cpu"
        )
    )
    assert evaluation_test.format_metrics(metrics).splitlines()[-1].startswith("TrackML score:")
    assert metrics["clustering"]["min_cluster_size"] == 2  # published linear:3 = (2, 3)
    # Overrides: scikit-learn's HDBSCAN, -1 for outliers, other data split, fewer events.
    other = evaluation_test.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(
            model_name=str(checkpoint),
            split="val",
            max_events=10,
            min_cluster_size=3,
            cluster_implementation="sklearn",
            noise="unassigned",
            cluster_jobs=1,
        )
    )
    assert other["n_events"] == 10
    assert other["clustering"] == {
        "min_cluster_size": 3,
        "min_samples": 3,
        "implementation": "sklearn",
        "noise": "unassigned",
        "n_jobs": 1,
        "allow_single_cluster": False,
        "one_track_fallback": True,
    }
    with pytest.raises(ValueError, match="kinematics"):  # REDVID has no pT
        evaluation_test.main(["--model_name", str(checkpoint), "--pt_min", "0.9"])


def test_grid_search_on_the_validation_split(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = evaluation_test.main(
        [
            "--model_name",
            str(checkpoint),
            "--grid_search",
            "--grid_min_cluster_size",
            "2",
            "3",
            "--grid_min_samples",
            "1",
            "3",
            "--max_events",
            "20",
            "--cluster_jobs",
            "2",
        ]
    )
    assert "grid search on the validation split: best" in capsys.readouterr().out
    search = metrics["grid_search"]
    table = pd.DataFrame(search["table"])
    assert search["n_events"] == 20 and len(table) == 4
    first_best = table.iloc[int(np.argmax(table["trackml_score"].to_numpy()))]
    assert search["best"] == [first_best["min_cluster_size"], first_best["min_samples"]]
    # The test split is then evaluated with the chosen pair.
    clustering = metrics["clustering"]
    assert [clustering["min_cluster_size"], clustering["min_samples"]] == search["best"]
    assert metrics["n_events"] == 20


def test_performance_stats_table(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    try:
        stats = performance_stats.main(
            [
                "--model_name",
                str(checkpoint),
                "--timed_events",
                "8",
                "--warmup",
                "2",
                "--cluster_jobs",
                "1",
                "--cpu_threads",
                "1",
                "--output_dir",
                str(tmp_path / "perf"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    timings = stats["timings"]
    for stage in ("model_cpu", "clustering", "scoring"):
        assert timings[stage]["n"] == 8
        assert 0 < timings[stage]["mean_ms"] < 5_000 and timings[stage]["std_ms"] >= 0
    assert timings["model_cpu_batched"]["events_per_s"] > 0
    assert timings["pipeline"]["events_per_s"] > 0
    assert ("model_cuda" in timings) == torch.cuda.is_available()
    assert stats["environment"]["cpu_threads"] == 1
    assert stats["regression"]["mse_normalised"] > 0
    assert SCORE_KEYS - {"timings_s"} <= set(stats)

    written = strict_json(tmp_path / "perf" / "performance.json")
    assert written["timings"]["model_cpu"]["mean_ms"] == timings["model_cpu"]["mean_ms"]
    table = (tmp_path / "perf" / "performance.md").read_text()
    for row in (
        "| model per event, CPU (1 threads, batch 1) |",
        "| model per event, CUDA (batch 1) |",
        "| clustering per event (HDBSCAN hdbscan",
        "| scoring per event (TrackML score) |",
        "| TrackML score |",
        "| double majority (trackformers) |",
        "| MSE (normalised targets) |",
        "| theta |",
    ):
        assert row in table, row
    # Every per-event timing reads "mean ± std ms (median m)".
    assert len(re.findall(r"\| \d+\.\d+ ± \d+\.\d+ ms \(median \d+\.\d+\) \|", table)) == 3
    assert table.strip() in printed


def test_trackml_checkpoint_reports_gnn_tracking_and_pt_plots(
    trackml_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    metrics = evaluation_test.main(
        ["--model_name", str(trackml_checkpoint), "--cluster_jobs", "1", "--output_dir", str(out)]
    )
    assert set(metrics["efficiencies"]) == {
        "trackformers",
        "gnn_tracking_pt0.0",
        "gnn_tracking_pt0.5",
        "gnn_tracking_pt0.9",
        "gnn_tracking_pt1.5",
    }
    counts = [metrics["efficiencies"][f"gnn_tracking_pt{x}"]["n_particles"] for x in (0.0, 1.5)]
    assert counts[0] >= counts[1]
    binned = pd.DataFrame(metrics["efficiency_vs_pt"])
    assert binned["n_particles"].sum() == metrics["n_particles"]
    for name in ("heatmap_q", "heatmaps", "event_display", "efficiency_pt", "efficiency_eta"):
        assert_png(out / f"{name}.png")
    strict_json(out / "metrics.json")  # NaN efficiencies of empty bins are written as null

    headline = evaluation_test.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(
            model_name=str(trackml_checkpoint),
            definition="gnn_tracking",
            pt_min=0.9,
            cluster_jobs=1,
        )
    )
    assert headline["definition"] == "gnn_tracking" and headline["pt_min"] == 0.9
    assert headline["n_particles"] == metrics["efficiencies"]["gnn_tracking_pt0.9"]["n_particles"]


def small_events() -> EventSet:
    """Two events: tracks 1, 2 (3 hits each) and a noise hit; targets (a, b) per track."""
    table = pd.DataFrame(
        {
            "event_id": [0] * 7 + [1] * 4,
            "hit_id": [*range(7), *range(4)],
            "particle_id": [1, 1, 1, 2, 2, 2, 0, 5, 5, 5, 0],
            "weight": [1.0] * 6 + [0.0] + [1.0] * 3 + [0.0],
            "x": np.arange(11.0),
            "y": np.arange(11.0) ** 2,
            "z": np.ones(11),
            "a": [0.5, 0.5, 0.5, 2.0, 2.0, 2.0, np.nan, 1.0, 1.0, 1.0, np.nan],
            "b": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, np.nan, 3.0, 3.0, 3.0, np.nan],
        }
    )
    return EventSet.from_table(table, ("x", "y", "z"), ("a", "b"))


def test_regression_errors_by_hand() -> None:
    events = small_events()
    normaliser = Normaliser.fit(events)
    exact = normaliser.normalise_targets(events.targets)
    result = regression_errors(events, normaliser, exact)
    assert result["n_hits"] == 9  # noise has no target
    assert result["mse_normalised"] == pytest.approx(0.0, abs=1e-10)
    assert result["mse"]["a"] == pytest.approx(0.0, abs=1e-10)
    # One standard deviation off everywhere: MSE 1 in normalised units, std^2 physically.
    result = regression_errors(events, normaliser, exact + 1.0)
    assert result["mse_normalised"] == pytest.approx(1.0)
    for k, name in enumerate(("a", "b")):
        assert result["mse"][name] == pytest.approx(normaliser.target_std[k] ** 2, rel=1e-5)
        assert result["rmse"][name] == pytest.approx(normaliser.target_std[k], rel=1e-5)


def test_score_reconstruction_of_the_truth() -> None:
    events = small_events()
    # Truth labels; the noise hits as singletons.
    labels = np.where(events.particle_id > 0, events.particle_id, 100 + np.arange(11))
    result = score_reconstruction(events, labels)
    assert result["trackml_score"] == 1.0 and result["n_events"] == 2
    assert result["perfect"] == result["double_majority"] == result["lhc"] == 1.0
    assert result["n_particles"] == 3 and result["fake_rate"] == 0.0


def test_a_shipped_checkpoint_is_scored_on_the_test_set_it_names(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from checkpoint import inference_checkpoint, load_checkpoint, save_checkpoint

    monkeypatch.setattr(evaluation_test, "REPO_ROOT", tmp_path)  # test sets go to tmp
    state = load_checkpoint(checkpoint)
    test_set = {"n_events": 30, "tracks": "3", "track_type": "linear", "seed": 11}
    shipped = tmp_path / "shipped.pt"
    save_checkpoint(inference_checkpoint(state, test_set), shipped)
    metrics = evaluation_test.main(["--model_name", str(shipped), "--cluster_jobs", "1"])
    assert metrics["n_events"] == 30  # the named set, not the training file's 45-event split
    assert (tmp_path / "data" / "redvid_linear_3_30ev_seed11.csv").exists()
    # The training file's splits stay reachable (grid search tunes on its val split).
    config = evaluation_test.EvaluationConfig(model_name=str(shipped), split="val")
    val = evaluation_test.evaluation_events(load_checkpoint(shipped), config)
    assert val.n_events == 45
    # Shipped checkpoints hold no optimizer state: resuming one is refused clearly.
    resume = _tiny_config(Path(state["data"]["path"]), shipped, "linear", epochs=3)
    with pytest.raises(ValueError, match="inference-only"):
        training.train(replace(resume, resume=True))
