"""The training loop: it learns, checkpoints atomically, resumes exactly, evaluates."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import training
import training_config
import training_loop
import training_start
from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from data_processing.errors import UserError, run_cli
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation import pipeline
from evaluation import test as evaluation_test
from tests.conftest import make_tiny_train_config


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lin3.csv"
    config = SimulationConfig(n_events=600, tracks="3", track_type="linear", seed=11)
    return generate_dataset(config, path, progress=False)


def _config(data: Path, checkpoint: Path, **overrides) -> training.TrainConfig:
    return make_tiny_train_config(data, checkpoint, **{"nr_epochs": 3, **overrides})


def test_training_lowers_validation_loss_and_beats_shuffled_labels(
    linear_file: Path, tmp_path: Path
) -> None:
    result = training_loop.train(_config(linear_file, tmp_path / "m.pt"))
    assert result.val_losses[-1] < 0.5 * result.val_losses[0]
    # Targets are standardised, so always predicting the mean has an MSE of about 1.
    assert result.val_losses[-1] < 0.25

    # Same model trained on labels shuffled across events: nothing to learn.
    shuffled = pd.read_csv(linear_file, sep=";")
    coefficient_columns = ["radial_coeff", "pitch_coeff", "azimuthal_const"]
    tracks = shuffled.loc[shuffled.track_id > 0].drop_duplicates(["event_id", "track_id"])
    permuted = tracks[coefficient_columns].to_numpy()[
        np.random.default_rng(0).permutation(len(tracks))
    ]
    tracks = tracks[["event_id", "track_id"]].assign(
        **{c: permuted[:, i] for i, c in enumerate(coefficient_columns)}
    )
    shuffled = shuffled.drop(columns=coefficient_columns).merge(tracks, on=["event_id", "track_id"])
    shuffled_path = tmp_path / "shuffled.csv"
    shuffled.to_csv(shuffled_path, sep=";", index=False)
    baseline = training_loop.train(_config(shuffled_path, tmp_path / "s.pt"))
    assert baseline.val_losses[-1] > 0.8
    assert result.val_losses[-1] < 0.3 * baseline.val_losses[-1]


def test_resume_continues_exactly_where_a_killed_run_stopped(
    linear_file: Path, tmp_path: Path
) -> None:
    straight = training_loop.train(_config(linear_file, tmp_path / "a.pt", nr_epochs=2))
    training_loop.train(_config(linear_file, tmp_path / "b.pt", nr_epochs=1))
    resumed = training_loop.train(_config(linear_file, tmp_path / "b.pt", nr_epochs=2, resume=True))
    np.testing.assert_allclose(resumed.train_losses, straight.train_losses, rtol=1e-6)
    np.testing.assert_allclose(resumed.val_losses, straight.val_losses, rtol=1e-6)
    a = load_checkpoint(tmp_path / "a.pt")["model_state_dict"]
    b = load_checkpoint(tmp_path / "b.pt")["model_state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_resume_goes_on_after_a_time_limit_but_not_with_other_data(
    linear_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "t.pt"
    cut = training_loop.train(_config(linear_file, path, nr_epochs=3, max_minutes=1e-6))
    assert len(cut.val_losses) == 1  # the time limit stopped it after epoch 0
    resumed = training_loop.train(_config(linear_file, path, nr_epochs=3, resume=True))
    assert len(resumed.val_losses) == 3
    # Another seed would move the checkpoint's test events into training.
    with pytest.raises(ValueError, match="split_seed 0 in the checkpoint, 1 now"):
        training_loop.train(_config(linear_file, path, nr_epochs=4, resume=True, seed=1))
    with pytest.raises(ValueError, match="model d_model 16 in the checkpoint, 32 now"):
        training_loop.train(_config(linear_file, path, nr_epochs=4, resume=True, embedding_size=32))
    with pytest.raises(ValueError, match=r"data file 'lin3\.csv' in the checkpoint"):
        training_loop.train(_config(tmp_path / "other.csv", path, nr_epochs=4, resume=True))
    # Settings spelled differently that build the same model and data are accepted.
    state = load_checkpoint(path)
    same = _config(linear_file, path, nr_epochs=4, resume=True, norm="post", attention="math")
    training_start.check_resumable(state, same, path)
    pre = {"norm": "pre", "norm_first": True}  # as a pre-norm run stores them
    pre_state = {**state, "model_config": {**state["model_config"], **pre}}
    training_start.check_resumable(pre_state, _config(linear_file, path, norm_first=True), path)


def test_init_weights_starts_from_a_checkpoint_with_its_normaliser(
    linear_file: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first.pt"
    training_loop.train(_config(linear_file, first, nr_epochs=2))
    stored = load_checkpoint(first)
    # Fine-tuning on other events at a vanishing rate: the run holds the stored weights
    # and normaliser (not one fitted to the new events), and counts its own epochs.
    other = tmp_path / "lin3_other.csv"
    generate_dataset(
        SimulationConfig(n_events=300, tracks="3", track_type="linear", seed=12),
        other,
        progress=False,
    )
    tuned = tmp_path / "tuned.pt"
    config = _config(other, tuned, nr_epochs=1, lr=1e-12, init_weights=str(first))
    result = training_loop.train(config)
    state = load_checkpoint(tuned)
    assert state["epoch"] == 0 and len(result.val_losses) == 1
    assert state["normaliser"] == stored["normaliser"]
    for name, weight in stored["best_model_state_dict"].items():
        torch.testing.assert_close(state["model_state_dict"][name], weight, atol=1e-6, rtol=0)
    # The first run's best weights on the new events: the same validation loss, which a
    # fresh model (or a refitted normaliser) would not give.
    fresh = training_loop.train(_config(other, tmp_path / "fresh.pt", nr_epochs=1, lr=1e-12))
    assert result.val_losses[0] < fresh.val_losses[0] - 0.1
    # On the command line the model options not given are the checkpoint's.
    argv = ["--init_weights", str(first), "--data_path", str(other), "--model_name", str(tuned)]
    parsed = training_config.config_from_args(argv)
    assert (parsed.embedding_size, parsed.hidden_dim, parsed.nr_enc_layers) == (16, 32, 2)
    assert training_config.config_from_args([*argv, "--embedding_size", "32"]).embedding_size == 32
    # Other model options are refused, not ignored; so is a missing file.
    with pytest.raises(UserError, match="model d_model 16 in the checkpoint, 32 now"):
        training_loop.train(replace(config, embedding_size=32))
    with pytest.raises(UserError, match="no such checkpoint"):
        training_loop.train(replace(config, init_weights=str(tmp_path / "missing.pt")))
    other_family = tmp_path / "other_family.pt"  # e.g. a tracker's: no input normaliser
    save_checkpoint({**stored, "normaliser": None}, other_family)
    with pytest.raises(UserError, match="not a TransformerRegressor checkpoint"):
        training_loop.train(replace(config, init_weights=str(other_family)))


def test_checkpoint_round_trip_and_atomic_write(linear_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    training_loop.train(_config(linear_file, path, nr_epochs=1))
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and len(state["val_losses"]) == 1
    assert state["model_config"]["d_model"] == 16
    assert state["data"]["data_type"] == "linear"
    model, normaliser = model_from_checkpoint(state)
    assert normaliser.input_mean.shape == (3,)
    reloaded = {k: v for k, v in model.state_dict().items()}
    for name, value in state["best_model_state_dict"].items():
        torch.testing.assert_close(reloaded[name], value)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_checkpoint({**state, "epoch": Unpicklable()}, path)
    # The old checkpoint is intact and no temporary file is left behind.
    assert load_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    with pytest.raises(ValueError, match="lacks"):
        torch.save({"epoch": 1}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


def test_evaluation_needs_only_the_checkpoint(linear_file: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.pt"
    training_loop.train(_config(linear_file, path, nr_epochs=4, embedding_size=32, hidden_dim=64))
    out_json = tmp_path / "metrics.json"
    metrics = evaluation_test.main(
        ["--model_name", str(path), "--cluster_jobs", "1", "--output", str(out_json)]
    )
    assert "TrackML score:" in capsys.readouterr().out
    assert metrics["n_events"] == 90  # the 15 % test split of 600 events
    # Four short epochs on 3-track linear events already find most tracks.
    assert 0.6 < metrics["trackml_score"] <= 1.0
    assert out_json.exists()


def test_cli_defaults_match_the_config() -> None:
    config = training.config_from_args([])
    assert config == training.TrainConfig()
    config = training.config_from_args(["--nr_epochs", "3", "--no-evaluate", "--norm_first"])
    assert config.nr_epochs == 3 and not config.evaluate and config.norm_first


@pytest.mark.slow
def test_main_job_reaches_published_quality(tmp_path: Path) -> None:
    """The README's main job (default settings) scores >= 0.95 on 3-track linear events."""
    result = training.main(["--model_name", str(tmp_path / "main.pt")])
    assert result.metrics is not None and result.metrics["trackml_score"] >= 0.95


def test_early_stopping_keeps_the_best_weights_and_resumes_with_the_new_patience(
    linear_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation losses are scripted (training runs for real), one per validation pass.
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.3])
    real_run_epoch = training_loop.run_epoch

    def run_epoch(model, data, plan, packed, optimisation=None, *args, **kwargs) -> float:
        if optimisation is None:
            return next(scripted)
        return real_run_epoch(model, data, plan, packed, optimisation, *args, **kwargs)

    monkeypatch.setattr(training_loop, "run_epoch", run_epoch)
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def record(epoch: int, model, seconds: float, val_loss: float) -> None:
        weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    path = tmp_path / "es.pt"
    small = {"nr_enc_layers": 1, "embedding_size": 8, "hidden_dim": 16}
    result = training_loop.train(
        _config(linear_file, path, nr_epochs=6, early_stop=2, **small), on_epoch=record
    )
    # Best 0.5 at epoch 1; epochs 2 and 3 do not improve: two stale epochs stop the run.
    assert result.val_losses == [1.0, 0.5, 0.7, 0.8]
    assert len(result.train_losses) == 4 and sorted(weights) == [0, 1, 2, 3]
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["stale_epochs"] == 2 and state["stopped"] is True
    assert state["val_losses"] == [1.0, 0.5, 0.7, 0.8]
    for name, value in state["best_model_state_dict"].items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0)
    for name, value in state["model_state_dict"].items():
        torch.testing.assert_close(value, weights[3][name], rtol=0, atol=0)
    assert any(not torch.equal(weights[1][name], weights[3][name]) for name in weights[1]), (
        "training did not change the weights between epochs 1 and 3"
    )
    latest, _ = model_from_checkpoint(state, best=False)
    for name, value in latest.state_dict().items():
        torch.testing.assert_close(value, weights[3][name], rtol=0, atol=0)
    best, _ = model_from_checkpoint(state)
    for name, value in best.state_dict().items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0)

    # Resumed with the same patience: still stopped, no epoch runs, nothing is rewritten.
    weights.clear()
    again = training_loop.train(
        _config(linear_file, path, nr_epochs=6, early_stop=2, resume=True, **small),
        on_epoch=record,
    )
    assert again.val_losses == [1.0, 0.5, 0.7, 0.8] and weights == {}
    assert load_checkpoint(path)["epoch"] == 3
    # A longer patience (2 stale epochs < 5) continues: epochs 4 (0.9) and 5 (0.3, best).
    more = training_loop.train(
        _config(linear_file, path, nr_epochs=6, early_stop=5, resume=True, **small),
        on_epoch=record,
    )
    assert more.val_losses == [1.0, 0.5, 0.7, 0.8, 0.9, 0.3]
    assert sorted(weights) == [4, 5]
    state = load_checkpoint(path)
    assert state["epoch"] == 5 and state["stale_epochs"] == 0 and state["stopped"] is False
    for name, value in state["best_model_state_dict"].items():
        torch.testing.assert_close(value, weights[5][name], rtol=0, atol=0)
    assert next(scripted, None) is None  # exactly six validation passes in all


# --------------------------------------------------------------------------------------
# Command lines: user errors end in one line naming the file, never a traceback, and
# an unwritable output is refused before any work.
# --------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """``python <args>`` from the repository root, as a user runs it (no debug)."""
    env = {k: v for k, v in os.environ.items() if k != "TRACKFORMERS_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_user_error(result: subprocess.CompletedProcess[str], *named: str) -> str:
    """Exit status 2, one ``error:`` line on stderr naming every string of ``named``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in named:
        assert text in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def malformed_files(linear_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A missing column, a NaN coordinate and a text file posing as a checkpoint."""
    folder = tmp_path_factory.mktemp("malformed")
    table = pd.read_csv(linear_file, sep=";")
    table.drop(columns=["hit_z"]).to_csv(folder / "no_z.csv", sep=";", index=False)
    with_nan = table.astype({"hit_r": float})
    with_nan.loc[7, "hit_r"] = np.nan
    with_nan.to_csv(folder / "nan_r.csv", sep=";", index=False)
    (folder / "notes.pt").write_text("this is not a checkpoint\n")
    return {"no_z": folder / "no_z.csv", "nan_r": folder / "nan_r.csv", "text": folder / "notes.pt"}


def test_training_cli_reports_bad_data_files_in_one_line(
    malformed_files: dict, tmp_path: Path
) -> None:
    model = str(tmp_path / "m.pt")
    common = ["--model_name", model, "--nr_epochs", "1", "--no-progress", "--no-evaluate"]
    missing = _run_script("training.py", "--data_path", str(malformed_files["no_z"]), *common)
    assert "hit_z" in _assert_user_error(missing, "no_z.csv")
    nan = _run_script("training.py", "--data_path", str(malformed_files["nan_r"]), *common)
    assert "hit_r" in _assert_user_error(nan, "nan_r.csv")
    assert not Path(model).exists()  # nothing trained


def test_evaluation_cli_reports_an_unreadable_checkpoint_in_one_line(
    malformed_files: dict,
) -> None:
    result = _run_script("evaluation/test.py", "--model_name", str(malformed_files["text"]))
    _assert_user_error(result, "notes.pt")
    # --debug shows the traceback instead.
    debug = _run_script(
        "evaluation/test.py", "--model_name", str(malformed_files["text"]), "--debug"
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_mismatched_resume_is_refused_in_one_line(linear_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    training_loop.train(_config(linear_file, path, nr_epochs=1))
    result = _run_script(
        "training.py", "--resume", "--model_name", str(path), "--embedding_size", "32"
    )
    assert "d_model" in _assert_user_error(result, "run.pt")


def test_resume_with_the_checkpoint_name_alone_takes_its_options(
    linear_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "run.pt"
    training_loop.train(_config(linear_file, path, nr_epochs=1, lr=2e-3))
    config = training.config_from_args(["--resume", "--model_name", str(path)])
    assert config.data_path == str(linear_file) and config.embedding_size == 16
    assert config.nr_enc_layers == 2 and config.lr == 2e-3 and config.nr_epochs == 1
    # An option given explicitly wins, so the run continues with more epochs...
    longer = training.config_from_args(["--resume", "--model_name", str(path), "--nr_epochs", "2"])
    assert longer.nr_epochs == 2 and longer.embedding_size == 16
    resumed = training_loop.train(replace(longer, evaluate=False, progress=False))
    assert len(resumed.val_losses) == 2
    # ...and one that changes the model is refused (check_resumable).
    wider = training.config_from_args(["--resume", "--model_name", str(path), "--hidden_dim", "64"])
    with pytest.raises(UserError, match="dim_feedforward"):
        training_loop.train(replace(wider, evaluate=False))


def test_unwritable_model_name_is_refused_before_any_work(
    linear_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _run_script(
        "training.py", "--data_path", str(linear_file), "--model_name", str(blocker / "m.pt")
    )
    _assert_user_error(result, "a_file")
    # Only the config line came before the refusal: no data read, no epoch run.
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("config:")


def test_unwritable_evaluation_output_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for option in ("--output", "--output_dir"):
        result = _run_script(
            "evaluation/test.py", "--model_name", "models/lin_3.pt", option, str(blocker / "out")
        )
        _assert_user_error(result, "a_file", option)
        assert "TrackML score" not in result.stdout


def test_metrics_are_printed_before_they_are_written(
    linear_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    path = tmp_path / "m.pt"
    training_loop.train(_config(linear_file, path, nr_epochs=1))

    def failing_write(metrics: dict, target: str | Path) -> Path:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(pipeline, "write_json", failing_write)
    argv = ["--model_name", str(path), "--cluster_jobs", "1", "--output", str(tmp_path / "m.json")]
    with pytest.raises(SystemExit) as stop:
        run_cli(evaluation_test.main, argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "TrackML score:" in captured.out  # the numbers are not lost
    assert "m.json: Permission denied" in captured.err


def test_every_training_option_has_help_and_shows_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    parser = training_config.build_arg_parser()
    bare = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert bare == []
    text = parser.format_help()
    assert "(default: 40)" in text and "(default: runs/transformer_regressor.pt)" in text
    assert "--no-progress" in text and "--threads" in text


def test_a_bad_option_is_one_line() -> None:
    result = _run_script("training.py", "--nr_epochs", "many")
    assert "--nr_epochs" in _assert_user_error(result, "invalid int value: 'many'")
    result = _run_script("evaluation/test.py", "--model_name", "m.pt", "--split", "half")
    assert "--split" in _assert_user_error(result, "invalid choice: 'half'")


@pytest.mark.parametrize(
    "command",
    [["training.py"], ["training_flash.py"], ["-m", "refiner.training_refiner"]],
    ids=["training", "training_flash", "training_refiner"],
)
def test_training_help_loads_no_torch(command: list[str]) -> None:
    """``--help`` of every training command line answers without importing torch (the
    loop, checkpoints and the network are imported only once the options are parsed)."""
    result = _run_script("-X", "importtime", *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "--attention_dropout" in result.stdout and "--nr_epochs" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "training_config" in imported and "network_options" in imported
    assert not imported & {"torch", "model", "checkpoint", "training_loop"}, imported


def test_attention_dropout_is_opt_in_and_a_resumed_run_may_switch_it(
    linear_file: Path, tmp_path: Path
) -> None:
    assert training.config_from_args([]).attention_dropout is False
    assert training.config_from_args(["--attention_dropout"]).model_config(3, 3).attention_dropout
    refused = _run_script("training.py", "--attention", "flash", "--attention_dropout")
    _assert_user_error(refused, "--attention flash", "cannot drop attention weights")
    path = tmp_path / "ad.pt"
    first = training_loop.train(_config(linear_file, path, nr_epochs=1, attention_dropout=True))
    assert first.model.encoder.layers[0].self_attn.dropout == pytest.approx(0.1)
    assert load_checkpoint(path)["model_config"]["attention_dropout"] is True
    # The command line keeps the stored choice unless told otherwise.
    stored = training.config_from_args(["--resume", "--model_name", str(path)])
    assert stored.attention_dropout is True
    switched = ["--resume", "--model_name", str(path), "--no-attention_dropout"]
    assert training.config_from_args(switched).attention_dropout is False
    resumed = training_loop.train(_config(linear_file, path, nr_epochs=2, resume=True))
    assert len(resumed.val_losses) == 2
    assert resumed.model.config.attention_dropout is False
    assert resumed.model.encoder.layers[0].self_attn.dropout == 0.0
    assert load_checkpoint(path)["model_config"]["attention_dropout"] is False
