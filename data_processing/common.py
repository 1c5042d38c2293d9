"""Small helpers shared by the data modules: reading CSVs, writing files atomically, and
parsing "N" / "MIN-MAX" counts.

This module depends on the standard library and pandas only, so the TrackML converter and
the checkpoint writer can use it without importing torch or the simulator.
"""

from __future__ import annotations

import os
import re
import secrets
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_processing.errors import UserError

#: Permission bits of a written data or checkpoint file before the umask is applied:
#: readable by everyone, writable by the owner (what ``open()`` gives with umask 022).
FILE_MODE = 0o644

_COUNT_RANGE_RE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_count_range(spec: str, what: str = "count") -> tuple[int, int]:
    """Parse ``"N"`` (exactly N) or ``"MIN-MAX"`` into ``(min, max)``.

    Args:
        spec: the text, e.g. ``"20"`` or ``"10-50"`` (blanks around the numbers allowed).
        what: what is counted, for the error message (e.g. ``"track count"``).

    Returns:
        (min, max) with 1 <= min <= max; ``"N"`` gives (N, N).

    Raises:
        UserError: ``spec`` has another form, or min < 1 or max < min.
    """
    match = _COUNT_RANGE_RE.fullmatch(spec)
    if match is None:
        raise UserError(f"{what} must look like 'N' or 'MIN-MAX', got {spec!r}")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if low < 1 or high < low:
        raise UserError(f"{what} range must satisfy 1 <= MIN <= MAX, got {spec!r}")
    return low, high


def concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[sum(lengths)] int64: ``starts[0] .. starts[0] + lengths[0] - 1``, then the next run,
    and so on (the rows of chosen events or particles), without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    # Each output position minus its run's first output position, plus the run's start.
    run_first = np.cumsum(lengths) - lengths
    return np.repeat(starts - run_first, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def read_csv(path: str | os.PathLike[str], description: str, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)`` whose every read error names the file.

    Args:
        path: the file (``.gz`` is decompressed by pandas).
        description: what the file should be, for messages (e.g. ``"truth CSV file"``).
        **kwargs: passed to ``pd.read_csv`` (e.g. ``sep=";"``).

    Returns:
        The DataFrame as pandas reads it (no validation of columns or values).

    Raises:
        FileNotFoundError: the file does not exist (unchanged, it names the path).
        UserError: ``"<path>: file is empty"`` for an empty file; ``"<path>: not a readable
            <description> (<reason>)"`` when pandas cannot parse it, the bytes are not
            UTF-8 text (e.g. a parquet file passed as a CSV) or a ``.gz`` is corrupt or
            truncated.
    """
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{path}: file is empty") from err
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, zlib.error) as err:
        # These alone say e.g. "can't decode byte 0x.." (binary data such as parquet) or
        # "Compressed file ended before the end-of-stream marker" (a truncated .gz).
        raise UserError(f"{path}: not a readable {description} ({err})") from err


def _create_exclusive(directory: Path, name: str) -> Path:
    """Create a new empty file ``directory/.name.<random>.tmp`` with mode FILE_MODE & ~umask.

    ``os.open`` with a mode lets the kernel apply the process umask, unlike
    ``tempfile.mkstemp`` (always 0600) or reading the umask with ``os.umask`` (which
    briefly changes it for every thread of the process).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        candidate = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, flags, FILE_MODE))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{directory}: could not create a temporary file for {name}")


def _fsync(path: Path) -> None:
    """Flush the file's data to disk, so the rename never publishes unwritten blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file so that readers see either the old file or the complete new one.

    Yields a temporary path in ``path``'s directory (created empty, parent folders made);
    the caller writes the file there, by any means that opens the path (``open``,
    ``torch.save``, a pyarrow writer). When the ``with`` block ends normally the file is
    fsynced and renamed onto ``path`` (``os.replace``: atomic within one file system);
    when it raises, the temporary file is removed and the exception propagates, so a
    killed or failed run leaves no half file under either name.

    The result has mode ``FILE_MODE & ~umask`` (0644 with the usual umask 022): data
    sets and checkpoints are meant to be shared, which ``tempfile.mkstemp``'s 0600 is not.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_exclusive(path.parent, path.name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
