"""End-to-end tests of evaluation/test.py and evaluation/performance_stats.py.

A tiny model trained for two epochs on 300 generated events (seconds on a CPU) stands in
for a real checkpoint: these tests check the plumbing (files, keys, tables), not quality.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import training
import training_loop
from checkpoint import load_checkpoint, save_checkpoint
from custom_encoder import AttentionLayout
from data_processing import data_files
from data_processing.dataset import (
    SPLIT_FRACTIONS,
    EventSet,
    Normaliser,
    load_events,
    split_events,
)
from data_processing.errors import run_cli
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation import inference, performance_stats, pipeline
from evaluation import test as evaluation_test
from evaluation.clustering import ClusteringConfig
from evaluation.efficiencies import MatchSettings
from evaluation.inference import reconstruct, regression_errors, score_reconstruction
from refiner import training_refiner
from tests.conftest import make_tiny_train_config
from tests.oracles import DirectionOracle, straight_track_event

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
    return make_tiny_train_config(data, checkpoint, data_type=data_type, nr_epochs=epochs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch model on 300 linear 3-track events (test split: 45 events)."""
    folder = tmp_path_factory.mktemp("linear")
    data = generate_dataset(
        SimulationConfig(n_events=300, tracks="3", track_type="linear", seed=5),
        folder / "lin3.csv",
        progress=False,
    )
    training_loop.train(_tiny_config(data, folder / "m.pt", "linear", epochs=2))
    return folder / "m.pt"


@pytest.fixture(scope="module")
def trackml_checkpoint(trackml_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch model on 20 sub-events (10-20 particles, with noise) of the sample."""
    from data_processing.hit_table import write_hit_table
    from data_processing.trackml_data import SubEventConfig, build_sub_events
    from data_processing.trackml_events import read_event

    folder = tmp_path_factory.mktemp("trackml")
    event = read_event(trackml_sample_dir / "event000000001")
    table = build_sub_events(event, SubEventConfig((10, 20), 20, keep_noise=True, seed=1))
    write_hit_table(table, folder / "tml.parquet")
    training_loop.train(_tiny_config(folder / "tml.parquet", folder / "t.pt", "trackml", epochs=1))
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
    metrics = pipeline.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(
            model_name=str(checkpoint), split="test", cluster_jobs=1, device="cpu"
        )
    )
    assert evaluation_test.format_metrics(metrics).splitlines()[-1].startswith("TrackML score:")
    assert metrics["clustering"]["min_cluster_size"] == 2  # published linear:3 = (2, 3)
    # Overrides: scikit-learn's HDBSCAN, -1 for outliers, other data split, fewer events.
    other = pipeline.evaluate_checkpoint(
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
    out = capsys.readouterr().out
    assert "grid search on the validation split: best" in out
    search = metrics["grid_search"]
    table = pd.DataFrame(search["table"])
    # The whole grid is printed, one line per pair with its score.
    for row in search["table"]:
        pair = f"{row['min_cluster_size']:>3} {row['min_samples']:>3}: {row['trackml_score']:.4f}"
        assert pair in out
    assert search["n_events"] == 20 and len(table) == 4
    first_best = table.iloc[int(np.argmax(table["trackml_score"].to_numpy()))]
    assert search["best"] == [first_best["min_cluster_size"], first_best["min_samples"]]
    # The test split is then evaluated with the chosen pair.
    clustering = metrics["clustering"]
    assert [clustering["min_cluster_size"], clustering["min_samples"]] == search["best"]
    assert metrics["n_events"] == 20


def test_validation_and_test_splits_are_the_ones_training_made(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = load_checkpoint(checkpoint)
    # The independent split: the training file's events, split with training's seed.
    events = load_events(state["data"]["path"], "linear")
    seed = training.TrainConfig().seed  # _tiny_config keeps the default
    _, val_positions, test_positions = split_events(events.n_events, SPLIT_FRACTIONS, seed)
    val_ids, test_ids = events.event_id[val_positions], events.event_id[test_positions]
    assert len(val_ids) == len(test_ids) == 45 and not set(val_ids) & set(test_ids)

    # The best weights' validation loss is the normalised MSE of the validation split
    # (measured 0.49752807599 against the stored 0.49752807617); the test split's differs
    # (0.508), so evaluating the wrong split would show.
    val = pipeline.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(model_name=str(checkpoint), split="val", cluster_jobs=1)
    )
    best_val_loss = min(state["val_losses"])
    assert val["regression"]["mse_normalised"] == pytest.approx(best_val_loss, rel=1e-5)

    # The default evaluation scores the test split; the grid search sees only validation.
    scored: list[np.ndarray] = []
    tuned: list[np.ndarray] = []
    real_score, real_grid_search = pipeline.score_reconstruction, pipeline.grid_search

    def score(events: EventSet, *args, **kwargs) -> dict:
        scored.append(events.event_id.copy())
        return real_score(events, *args, **kwargs)

    def grid_search(params, offsets, truth: pd.DataFrame, *args, **kwargs):
        tuned.append(pd.unique(truth["event_id"]))
        return real_grid_search(params, offsets, truth, *args, **kwargs)

    monkeypatch.setattr(pipeline, "score_reconstruction", score)
    monkeypatch.setattr(pipeline, "grid_search", grid_search)
    metrics = pipeline.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(
            model_name=str(checkpoint),
            cluster_jobs=1,
            grid_search=True,
            grid_min_cluster_size=(2,),
            grid_min_samples=(3,),
        )
    )
    (scored_ids,) = scored
    (tuned_ids,) = tuned
    np.testing.assert_array_equal(scored_ids, test_ids)
    np.testing.assert_array_equal(tuned_ids, val_ids)
    assert metrics["n_events"] == 45 and metrics["grid_search"]["n_events"] == 45
    assert metrics["regression"]["mse_normalised"] != pytest.approx(best_val_loss, rel=1e-3)


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
        printed = capsys.readouterr().out
        # test.py's numbers for the same checkpoint and events (the test split), with
        # the same torch threads: the same predictions, so the same errors exactly.
        expected = pipeline.evaluate_checkpoint(
            evaluation_test.EvaluationConfig(model_name=str(checkpoint), cluster_jobs=1)
        )
    finally:
        torch.set_num_threads(threads)
    timings = stats["timings"]
    for stage in ("model_cpu", "clustering", "scoring"):
        assert timings[stage]["n"] == 8
        assert 0 < timings[stage]["mean_ms"] < 5_000 and timings[stage]["std_ms"] >= 0
    assert timings["model_cpu_batched"]["events_per_s"] > 0
    assert timings["pipeline"]["events_per_s"] > 0
    assert ("model_cuda" in timings) == torch.cuda.is_available()
    assert stats["environment"]["cpu_threads"] == 1
    assert stats["n_events"] == expected["n_events"] == 45
    assert stats["regression"] == expected["regression"]
    assert stats["regression"]["n_hits"] > 0 and stats["regression"]["mse_normalised"] > 0
    assert stats["trackml_score"] == expected["trackml_score"]
    assert SCORE_KEYS - {"timings_s"} <= set(stats)

    written = strict_json(tmp_path / "perf" / "performance.json")
    assert written["timings"]["model_cpu"]["mean_ms"] == timings["model_cpu"]["mean_ms"]
    table = (tmp_path / "perf" / "performance.md").read_text()
    for row in (
        "| model per event, CPU (1 thread, batch 1) |",
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

    headline = pipeline.evaluate_checkpoint(
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
    # The project variant: truth scores 100 %. (The published "trackformers" LHC counts
    # the two noise singletons as submitted tracks: 3 / 5.)
    result = score_reconstruction(events, labels, MatchSettings("trackformers_min_hits"))
    assert score_reconstruction(events, labels)["lhc"] == pytest.approx(3 / 5)
    assert result["trackml_score"] == 1.0 and result["n_events"] == 2
    assert result["perfect"] == result["double_majority"] == result["lhc"] == 1.0
    assert result["n_particles"] == 3 and result["fake_rate"] == 0.0


def test_score_reconstruction_is_the_mean_and_std_over_events() -> None:
    events = small_events()
    # Event 0 (rows 0-6) as the truth; event 1 (rows 7-10) every hit a track of its own,
    # so no track holds a majority of particle 5's 3 hits: event scores 1 and 0.
    labels = np.where(events.particle_id > 0, events.particle_id, 100 + np.arange(11))
    labels[7:] = 200 + np.arange(4)
    result = score_reconstruction(events, labels)
    assert result["n_events"] == 2
    # Per event: mean (1 + 0) / 2, std (ddof 0) 0.5. Pooling the hits would give 6 / 9
    # (weight 6 good of 9); ddof 1 would give a std of 0.707.
    assert result["trackml_score"] == 0.5
    assert result["trackml_score_std"] == 0.5


def test_a_shipped_checkpoint_is_scored_on_the_test_set_it_names(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from checkpoint import inference_checkpoint

    monkeypatch.setattr(data_files, "REPO_ROOT", tmp_path)  # test sets go to tmp
    state = load_checkpoint(checkpoint)
    test_set = {"n_events": 30, "tracks": "3", "track_type": "linear", "seed": 11}
    shipped = tmp_path / "shipped.pt"
    save_checkpoint(inference_checkpoint(state, test_set), shipped)
    metrics = evaluation_test.main(["--model_name", str(shipped), "--cluster_jobs", "1"])
    assert metrics["n_events"] == 30  # the named set, not the training file's 45-event split
    assert (tmp_path / "data" / "redvid_linear_3_30ev_seed11.csv").exists()
    # --max_events below the named set's size simulates only that many events (same seed),
    # not the whole set first.
    (tmp_path / "data" / "redvid_linear_3_30ev_seed11.csv").unlink()
    few = evaluation_test.main(["--model_name", str(shipped), "--max_events", "7"])
    assert few["n_events"] == 7
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "redvid_linear_3_7ev_seed11.csv"
    ]
    # The training file's splits stay reachable (grid search tunes on its val split).
    config = evaluation_test.EvaluationConfig(model_name=str(shipped), split="val")
    val = pipeline.evaluation_events(load_checkpoint(shipped), config)
    assert val.n_events == 45
    # Shipped checkpoints hold no optimizer state: resuming one is refused clearly.
    resume = _tiny_config(Path(state["data"]["path"]), shipped, "linear", epochs=3)
    with pytest.raises(ValueError, match="inference-only"):
        training_loop.train(replace(resume, resume=True))


def test_performance_stats_applies_the_grid_search_and_refuses_display_event(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A one-pair grid whose pair, (3, 1), is not the checkpoint's (2, 3): the timed
    # clustering must run with it, as test.py's does.
    options = ["--model_name", str(checkpoint), "--grid_search", "--grid_min_cluster_size"]
    options += ["3", "--grid_min_samples", "1", "--max_events", "6", "--cluster_jobs", "1"]
    timing = ["--timed_events", "2", "--warmup", "1", "--cpu_threads", "1"]
    threads = torch.get_num_threads()
    try:
        stats = performance_stats.main([*options, *timing, "--output_dir", str(tmp_path / "perf")])
    finally:
        torch.set_num_threads(threads)
    assert stats["grid_search"]["best"] == [3, 1] and stats["grid_search"]["n_events"] == 6
    clustering = stats["clustering"]
    assert (clustering["min_cluster_size"], clustering["min_samples"]) == (3, 1)
    table = (tmp_path / "perf" / "performance.md").read_text()
    assert "| HDBSCAN settings | grid search on 6 validation events: min_cluster_size 3" in table
    assert "(HDBSCAN hdbscan, mcs 3, ms 1, 1 process)" in table
    # The same tuning as test.py's, from the one shared setup.
    metrics = evaluation_test.main(options)
    assert metrics["grid_search"] == stats["grid_search"]
    assert metrics["trackml_score"] == stats["trackml_score"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        performance_stats.main(["--model_name", str(checkpoint), "--display_event", "3"])
    assert "unrecognized arguments: --display_event 3" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-2"])
def test_max_events_below_one_is_refused(
    checkpoint: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for tool in (evaluation_test, performance_stats):
        with pytest.raises(SystemExit) as stop:
            run_cli(tool.main, ["--model_name", str(checkpoint), "--max_events", value])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"--max_events must be at least 1 (got {value})" in err
        assert "Traceback" not in err
    with pytest.raises(ValueError, match="at least 1"):
        evaluation_test.EvaluationConfig(model_name=str(checkpoint), max_events=int(value))


def unassigned_example() -> tuple[EventSet, np.ndarray]:
    """One event: particles 1, 2 (6 hits each), 4 noise hits, every hit weight 1 (as REDVID).

    Returns the events and the labels of ``--noise unassigned``: all 6 hits of particle 1
    in track 0, 4 of particle 2's in track 1, the rest (2 of particle 2, the noise) -1.
    """
    particle_id = [1] * 6 + [2] * 6 + [0] * 4
    target = np.where(np.array(particle_id) > 0, np.array(particle_id, dtype=float), np.nan)
    table = pd.DataFrame(
        {
            "event_id": 0,
            "hit_id": np.arange(16),
            "particle_id": particle_id,
            "weight": 1.0,
            "x": np.arange(16.0),
            "y": np.arange(16.0) ** 2,
            "z": np.ones(16),
            "a": target,
            "b": -target,
        }
    )
    labels = np.array([0] * 6 + [1] * 4 + [-1] * 6)
    return EventSet.from_table(table, ("x", "y", "z"), ("a", "b")), labels


def test_unassigned_hits_are_in_no_track_and_efficiencies_run_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, labels = unassigned_example()
    calls = []

    def counted(*args: object, **kwargs: object) -> dict:
        calls.append(kwargs["settings"].definition)
        return scoring_efficiencies(*args, **kwargs)

    scoring_efficiencies = inference.efficiencies
    monkeypatch.setattr(inference, "efficiencies", counted)
    result = score_reconstruction(events, labels)
    # The default (trackformers, pT >= 0) is both the headline and the named set.
    assert calls == ["trackformers"]
    # Noise weighs 0: total 12. Track 0 all of particle 1 (+6), track 1 4 of particle 2's
    # 6 (+4); the -1 hits are in no track. Clusters: tracks 0 and 1, both matched.
    assert result["trackml_score"] == pytest.approx(10 / 12, abs=1e-15)
    assert (result["n_tracks"], result["lhc"], result["fake_rate"]) == (2, 1.0, 0.0)
    assert (result["perfect"], result["double_majority"]) == (0.5, 1.0)
    assert result["efficiencies"]["trackformers"]["n_tracks"] == 2


class DivergingOracle(nn.Module):
    """The exact direction oracle, except that hits within r < 1.5 come out NaN."""

    def __init__(self, normaliser: Normaliser) -> None:
        super().__init__()
        self.oracle = DirectionOracle(normaliser)
        self.normaliser = normaliser

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        norm = self.normaliser
        std, mean = (torch.as_tensor(v, dtype=x.dtype) for v in (norm.input_std, norm.input_mean))
        near = torch.linalg.vector_norm(x * std + mean, dim=-1) < 1.5
        out = self.oracle(x, layout)
        return torch.where(near[..., None], torch.full_like(out, float("nan")), out)


def test_reconstruct_counts_and_warns_about_non_finite_predictions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 3 straight tracks of 8 hits (r = 1..8); the model diverges on the first hit of each.
    events = straight_track_event({1: (0.6, 0.3), 2: (2.1, -2.0), 3: (1.4, 1.5)})
    normaliser = Normaliser.fit(events)
    model = DivergingOracle(normaliser)
    clustering = ClusteringConfig(min_cluster_size=3, min_samples=2, n_jobs=1)
    with caplog.at_level(logging.WARNING, logger="evaluation.clustering"):
        result = reconstruct(model, events, normaliser, clustering)
    assert result.n_non_finite == 3
    (record,) = caplog.records
    assert "3 of 24 hits (in 1 events, first event_id 0)" in record.getMessage()
    # The 3 NaN hits are singletons; the other 7 hits of each track form its cluster, so
    # each track is good with 7 of its 8 hits: score 21 / 24.
    nan_rows = np.flatnonzero(~np.isfinite(result.params).all(axis=1))
    assert len(nan_rows) == 3
    assert all((result.labels == result.labels[row]).sum() == 1 for row in nan_rows)
    assert score_reconstruction(events, result.labels)["trackml_score"] == 21 / 24


def test_a_missing_generated_training_file_is_simulated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Train where training generates its default set (data_path None) ...
    monkeypatch.setattr(data_files, "REPO_ROOT", tmp_path / "original")
    config = replace(
        _tiny_config(Path("unused"), tmp_path / "m.pt", "linear", epochs=1),
        data_path=None,
        tracks="3",
        n_events=100,
        seed=3,
    )
    training_loop.train(config)
    stored = Path(load_checkpoint(tmp_path / "m.pt")["data"]["path"])
    assert stored == tmp_path / "original" / "data" / "redvid_linear_3_100ev_seed3.csv"
    val = evaluation_test.EvaluationConfig(str(tmp_path / "m.pt"), split="val", cluster_jobs=1)
    before = pipeline.evaluate_checkpoint(val)
    # ... then evaluate from a "fresh clone" elsewhere, where that file does not exist.
    stored.unlink()
    monkeypatch.setattr(data_files, "REPO_ROOT", tmp_path / "clone")
    capsys.readouterr()
    after = pipeline.evaluate_checkpoint(val)
    rebuilt = tmp_path / "clone" / "data" / stored.name
    assert f"training data {stored} not found; simulating it again" in capsys.readouterr().out
    assert rebuilt.exists()
    # The same events: the same 15 validation events, the same numbers.
    assert after["n_events"] == before["n_events"] == 15
    assert after["trackml_score"] == before["trackml_score"]
    assert after["regression"] == before["regression"]
    # The rebuilt copy still counts as the training file: "auto" picks its test split.
    copy = replace(val, data_path=str(rebuilt), split="auto")
    state = load_checkpoint(tmp_path / "m.pt")
    assert pipeline.evaluation_events(state, copy).n_events == 15
    # The refiner's --base_model finds it too.
    refiner_data = training_refiner.RefinerDataConfig(base_model=str(tmp_path / "m.pt"))
    assert training_refiner.resolve_source(refiner_data)[0] == rebuilt

    # A file the user gave at training time cannot be rebuilt: a clear error naming it.
    state["train_config"]["data_path"] = str(tmp_path / "mine.csv")
    state["data"]["path"] = str(tmp_path / "mine.csv")
    save_checkpoint(state, tmp_path / "user.pt")
    message = re.escape(f"user.pt: its training data {tmp_path / 'mine.csv'} does not exist")
    with pytest.raises(FileNotFoundError, match=message):
        pipeline.evaluate_checkpoint(replace(val, model_name=str(tmp_path / "user.pt")))
    with pytest.raises(FileNotFoundError, match=message):
        training_refiner.resolve_source(
            training_refiner.RefinerDataConfig(base_model=str(tmp_path / "user.pt"))
        )


def test_every_evaluation_option_has_help_and_the_help_loads_no_torch() -> None:
    from evaluation import decomposition
    from refiner import refined_test

    parsers = {
        "test": evaluation_test.build_arg_parser(),
        "performance_stats": performance_stats.build_performance_parser(),
        "refined_test": refined_test.build_arg_parser(),
        "decomposition": decomposition.build_arg_parser(),
    }
    for name, parser in parsers.items():
        bare = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
        assert bare == [], (name, bare)
        assert "(default: 256)" in parser.format_help(), name  # --batch_size shows its default
    assert "--display_event" not in parsers["performance_stats"].format_help()
    # `python evaluation/test.py --help` answers without importing torch.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['evaluation/test.py', '--help']\n"
        "try:\n    runpy.run_path('evaluation/test.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--grid_min_samples" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "False"
