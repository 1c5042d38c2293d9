"""Checkpoint files: written atomically with a checksum, read back verified.

A checkpoint is a dict holding ``epoch``, ``model_state_dict`` (latest weights),
``best_model_state_dict`` (weights with the lowest validation loss),
``optimizer_state_dict``, ``train_losses``, ``val_losses``, ``model_config``,
``normaliser``, ``train_config`` and ``data`` (path, type, split seed and fractions), so
evaluation can rebuild the model and the test split with no repeated hyper-parameters.

A shipped (inference) checkpoint, made by ``inference_checkpoint``, keeps only the best
weights (``model_state_dict`` is the same tensors), has an empty optimizer state and
``inference_only`` set, and may name its own test set (``test_set``: the fields of a
``SimulationConfig``) that evaluation regenerates from its seed.

On disk (format 2) the file is a ``torch.save`` of a small envelope::

    {"format": "trackformers-checkpoint", "format_version": 2,
     "payload": <uint8 tensor: the bytes of torch.save of the checkpoint dict>,
     "payload_sha256": <hex digest of those bytes>}

The SHA-256 covers every byte of the payload, so a file damaged anywhere (a bad copy, a
disk error, zeroed blocks) is refused instead of silently loading wrong weights: torch's
own zip reader does not check its records. Both layers load with ``weights_only=True``.
Files written before the envelope (a bare checkpoint dict) still load, with a
``UnverifiedCheckpointWarning`` naming the file; ``python checkpoint.py upgrade PATH``
rewrites one with its checksum.

Usage:
    python checkpoint.py verify models/*.pt     # one line per file: verified or why not
    python checkpoint.py upgrade runs/old.pt    # add the checksum, same contents
"""

from __future__ import annotations

import argparse
import hashlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from data_processing.common import atomic_write
from data_processing.dataset import Normaliser
from data_processing.errors import DefaultsHelpFormatter, UserError, run_cli
from model import ModelConfig, TransformerRegressor

REQUIRED_KEYS = (
    "epoch",
    "model_state_dict",
    "best_model_state_dict",
    "optimizer_state_dict",
    "train_losses",
    "val_losses",
    "model_config",
    "normaliser",
    "data",
)
FORMAT_NAME = "trackformers-checkpoint"
FORMAT_VERSION = 2
_ENVELOPE_KEYS = ("format", "format_version", "payload", "payload_sha256")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_LEGACY_PICKLE_MAGIC = b"\x80"  # torch's pre-1.6 format: a bare pickle (protocol >= 2)


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint written before checksums (format 1) was loaded without verification."""


def _serialise(value: Any) -> bytes:
    """``torch.save`` of ``value`` into memory (raises before any file is touched)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically, with the SHA-256 of its serialised bytes.

    A killed run never leaves a half file; a failing serialisation leaves the old file.
    The file is shareable (mode 0644 less the umask), see ``common.atomic_write``.
    """
    payload = _serialise(state)
    envelope = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        # A uint8 tensor is stored as one raw zip record; bytes would be pickled as a
        # latin-1 string (protocol 2), half as large again.
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    with atomic_write(path) as tmp:
        torch.save(envelope, tmp)


def _first_sentence(error: BaseException) -> str:
    """``Type: first sentence`` of an error (torch's zip errors run to a paragraph)."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _torch_load(source: Path | io.BytesIO, path: Path, map_location: Any, what: str) -> Any:
    """``torch.load(weights_only=True)`` whose every failure is a UserError naming ``path``."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # missing or unreadable file: the OS error already names the path
    except Exception as error:  # torch raises many types for a damaged file
        if "Weights only load failed" in str(error):
            reason = "it holds objects other than tensors and plain containers (refused)"
        else:
            reason = f"{what} ({_first_sentence(error)})"
        raise UserError(f"{path}: not a readable checkpoint: {reason}") from error


def _read_file(path: Path, map_location: Any) -> Any:
    """The outer object of ``path`` (an envelope, or a format-1 checkpoint with its tensors
    on ``map_location``); a UserError saying what the file is when unreadable."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(4)
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: empty file, not a checkpoint")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_PICKLE_MAGIC)):
        kind = "a text file" if head.isascii() and head.decode("ascii").isprintable() else None
        raise UserError(
            f"{path}: not a PyTorch checkpoint ({kind or 'unknown format'}, first bytes {head!r})"
        )
    return _torch_load(path, path, map_location, f"truncated or corrupted file of {size:,} bytes")


def _open_envelope(outer: dict[str, Any], path: Path, map_location: Any) -> Any:
    """Verify the envelope's checksum and load its payload."""
    missing = [key for key in _ENVELOPE_KEYS if key not in outer]
    if missing:
        raise UserError(f"{path}: damaged checkpoint envelope, lacks {missing}")
    if outer["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {outer['format_version']} is newer than this "
            f"code reads ({FORMAT_VERSION}); update the repository"
        )
    stored = outer["payload"]
    if not (isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8):
        raise UserError(f"{path}: damaged checkpoint envelope, payload is not a byte tensor")
    payload = stored.cpu().numpy().tobytes()
    computed = hashlib.sha256(payload).hexdigest()
    if computed != outer["payload_sha256"]:
        raise UserError(
            f"{path}: checksum mismatch, the file is corrupted (stored sha256 "
            f"{str(outer['payload_sha256'])[:16]}..., contents hash to {computed[:16]}...)"
        )
    return _torch_load(io.BytesIO(payload), path, map_location, "unreadable payload")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``, verifying its checksum.

    Returns the checkpoint dict with tensors on ``map_location``. Raises
    ``FileNotFoundError`` when ``path`` is missing and ``UserError`` naming the file when it
    is not a checkpoint (a text file, a zip that is not torch's, a folder), is truncated or
    corrupted (checksum mismatch), or lacks a required key. A checkpoint without a
    checksum (written before format 2) loads with an ``UnverifiedCheckpointWarning``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # weights_only: a checkpoint is plain containers, numbers, strings and tensors, and
    # unpickling anything else could run code from a downloaded file.
    outer = _read_file(path, map_location)
    if isinstance(outer, dict) and outer.get("format") == FORMAT_NAME:
        state = _open_envelope(outer, path, map_location)
    else:
        warnings.warn(
            f"{path}: checkpoint without a checksum (written before format "
            f"{FORMAT_VERSION}), loaded unverified; `python checkpoint.py upgrade {path}` "
            "adds one",
            UnverifiedCheckpointWarning,
            stacklevel=2,
        )
        state = outer
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint dict (holds a {type(state).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {missing}")
    return state


def same_contents(a: Any, b: Any) -> bool:
    """True when two checkpoint trees hold equal values: same keys in the same order,
    tensors of equal dtype, shape and bits, equal numbers and strings."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and list(a) == list(b) and all(same_contents(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_contents(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def upgrade_checkpoint(path: str | Path) -> bool:
    """Rewrite ``path`` in the current format (with its checksum) when it lacks one.

    The rewritten file is read back and compared with the original, value by value, before
    the call returns. Returns True when the file was rewritten, False when it was current.
    """
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedCheckpointWarning)
        state = load_checkpoint(path)
    if not any(issubclass(w.category, UnverifiedCheckpointWarning) for w in caught):
        return False
    save_checkpoint(state, path)
    if not same_contents(state, load_checkpoint(path)):  # a bug, not a user error
        raise RuntimeError(f"{path}: rewritten checkpoint differs from the original")
    return True


def inference_checkpoint(
    state: dict[str, Any], test_set: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of ``state`` for shipping: best weights only, no optimizer state (about a
    third of the size); ``test_set`` (SimulationConfig fields) is stored when given."""
    slim = {
        **state,
        "model_state_dict": state["best_model_state_dict"],
        "optimizer_state_dict": {},
        "inference_only": True,
    }
    if test_set is not None:
        slim["test_set"] = dict(test_set)
    return slim


def model_from_checkpoint(
    state: dict[str, Any], best: bool = True, **config_overrides: Any
) -> tuple[TransformerRegressor, Normaliser]:
    """Rebuild the model (best or latest weights, in eval mode) and its normaliser.

    ``config_overrides`` change run-time-only options such as the attention backend.
    """
    config = ModelConfig.from_dict({**state["model_config"], **config_overrides})
    model = TransformerRegressor(config)
    model.load_state_dict(state["best_model_state_dict" if best else "model_state_dict"])
    model.eval()
    return model, Normaliser.from_dict(state["normaliser"])


def main(argv: Sequence[str] | None = None) -> int:
    """``verify`` or ``upgrade`` checkpoint files; prints one line per file."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument(
        "action",
        choices=("verify", "upgrade"),
        help="verify: check each file's checksum; upgrade: rewrite it with a checksum",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="checkpoint files")
    args = parser.parse_args(argv)
    print(f"config: action={args.action} paths={[str(p) for p in args.paths]}")
    for path in args.paths:
        if args.action == "upgrade":
            print(
                f"{path}: {'rewritten with a checksum' if upgrade_checkpoint(path) else 'current'}"
            )
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnverifiedCheckpointWarning)
            state = load_checkpoint(path)
        old = any(issubclass(w.category, UnverifiedCheckpointWarning) for w in caught)
        verdict = "no checksum (format 1), unverified" if old else "checksum verified"
        print(f"{path}: {verdict}, epoch {state['epoch']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
