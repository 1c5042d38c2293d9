"""Tests of checkpoint.py: checksummed checkpoints, and every damaged file refused by name."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from checkpoint import (
    FORMAT_NAME,
    UnverifiedCheckpointWarning,
    load_checkpoint,
    main,
    same_contents,
    save_checkpoint,
    upgrade_checkpoint,
)
from data_processing.errors import UserError, run_cli

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS_DIR.glob("*.pt"))


def _state() -> dict:
    """A small checkpoint-shaped dict: shared tensors (as inference checkpoints hold),
    bf16, int keys (optimizer state), lists, strings and None."""
    weights = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(4)}
    return {
        "epoch": 3,
        "model_state_dict": weights,
        "best_model_state_dict": weights,
        "optimizer_state_dict": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": []},
        "train_losses": [0.5, 0.25],
        "val_losses": [0.6, 0.3],
        "model_config": {"d_model": 16, "attention": "sdpa", "extra": None},
        "normaliser": {"input_mean": [0.0, 1.0, 2.0]},
        "data": {"path": "x.csv", "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)},
    }


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    """A copy of the smallest shipped checkpoint (a real file written by training)."""
    smallest = min(SHIPPED, key=lambda p: p.stat().st_size)
    return Path(shutil.copy(smallest, tmp_path / "model.pt"))


def test_round_trip_keeps_every_value_and_stores_a_checksum(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    save_checkpoint(_state(), path)
    envelope = torch.load(path, weights_only=True)
    assert envelope["format"] == FORMAT_NAME and len(envelope["payload_sha256"]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current file loads without any warning
        loaded = load_checkpoint(path)
    assert same_contents(loaded, _state())
    assert loaded["data"]["bf16"].dtype == torch.bfloat16
    # The shared storage of latest and best weights survives (shipped files stay small).
    assert (
        loaded["model_state_dict"]["w"].data_ptr()
        == loaded["best_model_state_dict"]["w"].data_ptr()
    )
    changed = {**_state(), "val_losses": [0.6, 0.31]}
    assert not same_contents(loaded, changed)
    assert not same_contents(loaded["data"]["bf16"], loaded["data"]["bf16"].float())


@pytest.mark.parametrize("where", [0.5, 0.02, 0.98])
def test_zeroed_block_is_refused_naming_the_file(shipped_copy: Path, where: float) -> None:
    data = bytearray(shipped_copy.read_bytes())
    start = min(int(len(data) * where), len(data) - 5000)
    data[start : start + 5000] = bytes(5000)
    shipped_copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.pt: "):
        load_checkpoint(shipped_copy)


def test_zeroed_middle_is_a_checksum_mismatch(shipped_copy: Path) -> None:
    # The middle of the file lies in the payload, which torch's reader would accept.
    data = bytearray(shipped_copy.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 5000] = bytes(5000)
    shipped_copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.pt: checksum mismatch"):
        load_checkpoint(shipped_copy)


def test_one_changed_payload_byte_is_a_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "flip.pt"
    save_checkpoint(_state(), path)
    envelope = torch.load(path, weights_only=True)
    envelope["payload"][len(envelope["payload"]) // 2] ^= 1
    torch.save(envelope, path)
    with pytest.raises(UserError, match=r"flip\.pt: checksum mismatch"):
        load_checkpoint(path)


def test_truncated_file_is_refused_naming_the_file(shipped_copy: Path) -> None:
    data = shipped_copy.read_bytes()
    # 20,000 bytes: torch's zip reader fails there with a bare OSError (EINVAL, no path)
    for keep in (len(data) // 2, len(data) - 10, 20_000, 100):
        shipped_copy.write_bytes(data[:keep])
        with pytest.raises(UserError, match=r"model\.pt: not a readable checkpoint: truncated"):
            load_checkpoint(shipped_copy)


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("epoch,loss\n0,0.5\n")
    with pytest.raises(UserError, match=r"notes\.pt: not a PyTorch checkpoint \(a text file"):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.pt: empty file"):
        load_checkpoint(empty)
    other_zip = tmp_path / "archive.pt"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "not torch")
    with pytest.raises(UserError, match=r"archive\.pt: not a readable checkpoint"):
        load_checkpoint(other_zip)
    with pytest.raises(UserError, match="is a folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    tensor_file = tmp_path / "tensor.pt"
    save_checkpoint(torch.zeros(3), tensor_file)
    with pytest.raises(UserError, match=r"tensor\.pt: not a checkpoint dict \(holds a Tensor"):
        load_checkpoint(tensor_file)
    partial = tmp_path / "partial.pt"
    save_checkpoint({"epoch": 1}, partial)
    with pytest.raises(UserError, match=r"partial\.pt: checkpoint lacks \['model_state_dict'"):
        load_checkpoint(partial)


class _Arbitrary:
    """A pickled object that weights_only loading must refuse."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.pt"
    torch.save({**_state(), "epoch": _Arbitrary()}, path)
    with pytest.raises(UserError, match=r"code\.pt: .*objects other than tensors"):
        load_checkpoint(path)


def test_old_format_loads_with_a_warning_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "old_run.pt"
    torch.save(_state(), path)  # a checkpoint written before checksums
    with pytest.warns(UnverifiedCheckpointWarning, match=r"old_run\.pt: checkpoint without"):
        assert same_contents(load_checkpoint(path), _state())
    assert upgrade_checkpoint(path) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same_contents(load_checkpoint(path), _state())
        assert upgrade_checkpoint(path) is False


def test_shipped_models_carry_a_checksum() -> None:
    assert len(SHIPPED) >= 7
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedCheckpointWarning)
        for path in SHIPPED:
            assert load_checkpoint(path)["inference_only"]


def test_cli_verifies_and_reports_a_bad_file_in_one_line(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(_state(), good)
    assert main(["verify", str(good)]) == 0
    assert f"{good}: checksum verified, epoch 3" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    with pytest.raises(SystemExit) as stop:
        run_cli(main, ["verify", str(bad)])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {bad}: not a PyTorch checkpoint") and "\n" not in error
