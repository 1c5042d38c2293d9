"""The evaluation command line, written once: settings dataclasses and their argparse builder.

Every evaluation tool (``evaluation/test.py``, ``evaluation/performance_stats.py``,
``refiner/refined_test.py``, ``evaluation/decomposition.py``) takes a checkpoint, chooses
events and clusters them the same way. Those shared settings are :class:`EvaluationOptions`;
a tool's own settings dataclass inherits from it (``EvaluationConfig`` for test.py adds the
efficiency definition, the grid search and the figures) and :func:`add_dataclass_arguments`
turns any such dataclass into its command line: one option per field, with the field's
name, type, default and help text (from the field's ``metadata``), so a setting and its
option cannot drift apart.

This module imports no torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from data_processing.data_types import DATA_TYPES
from data_processing.errors import DefaultsHelpFormatter, UserError
from evaluation.clustering import (
    DEFAULT_GRID_MIN_CLUSTER_SIZE,
    DEFAULT_GRID_MIN_SAMPLES,
    IMPLEMENTATIONS,
    NOISE_POLICIES,
)

SPLITS = ("auto", "train", "val", "test", "all")
DEFINITIONS = ("trackformers", "trackformers_min_hits", "gnn_tracking")  # = evaluation.efficiencies


def option(default: Any = MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field whose ``metadata`` carries its command-line help (and ``choices``,
    ``flags`` for extra option names, ``metavar``). Without a default the option is required.
    """
    return field(default=default, metadata={"help": help, **metadata})


def _value_type(hint: Any) -> tuple[Any, bool]:
    """(element type, is a tuple) of a field's type hint, ``X | None`` unwrapped."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    config_class: type,
    exclude: tuple[str, ...] = (),
    defaults: object | None = None,
) -> argparse.ArgumentParser:
    """Add one ``--<field>`` option per field of ``config_class`` (except ``exclude``).

    bool fields become ``--x/--no-x``; ``tuple[T, ...]`` fields take one or more values;
    ``T | None`` fields take a T and default to None. Defaults come from ``defaults`` (an
    instance) when given, else from the class. Help, ``choices`` and extra option names
    (``flags``) come from the field's metadata (see :func:`option`).
    """
    hints = typing.get_type_hints(config_class)
    for f in fields(config_class):
        if f.name in exclude:
            continue
        kind, is_tuple = _value_type(hints[f.name])
        names = [f"--{f.name}", *f.metadata.get("flags", ())]
        help_text = f.metadata.get("help") or f.name.replace("_", " ")
        keywords: dict[str, Any] = {"help": help_text, "dest": f.name}
        if defaults is not None:
            keywords["default"] = getattr(defaults, f.name)
        elif f.default is not MISSING:
            keywords["default"] = f.default
        elif f.default_factory is not MISSING:
            keywords["default"] = f.default_factory()
        else:
            keywords["required"] = True
        if "metavar" in f.metadata:
            keywords["metavar"] = f.metadata["metavar"]
        default = keywords.get("default")
        if is_tuple and isinstance(default, tuple | list):
            # Shown as typed on the command line ("2 3 4"), not as a Python tuple.
            keywords["help"] += f" (default: {' '.join(str(value) for value in default)})"
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        else:
            keywords["type"] = kind
            if is_tuple:
                keywords["nargs"] = "+"
            if "choices" in f.metadata:
                keywords["choices"] = f.metadata["choices"]
        parser.add_argument(*names, **keywords)
    return parser


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose bad-option message is one stderr line (exit 2), like every
    other user error of the project (``data_processing.errors.run_cli``)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def new_parser(description: str, prog: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """A parser whose help shows every option's default (``DefaultsHelpFormatter``) and
    whose bad-option message is one line (``OneLineErrorParser``)."""
    return OneLineErrorParser(
        prog=prog, description=description, formatter_class=DefaultsHelpFormatter, **kwargs
    )


def config_from_namespace(config_class: type, args: argparse.Namespace) -> Any:
    """``config_class`` built from parsed options (tuple fields as tuples).

    A value the dataclass refuses in ``__post_init__`` is a user error (one line, exit 2).
    """
    values = vars(args)
    for f in fields(config_class):
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return config_class(**values)
    except UserError:
        raise
    except ValueError as error:
        raise UserError(str(error)) from None


@dataclass
class EvaluationOptions:
    """What every evaluation tool shares: a checkpoint, its events, HDBSCAN and the machine.

    None means "as stored in the checkpoint".
    """

    model_name: str = option(help="checkpoint written by training.py")
    data_path: str | None = option(
        None, "evaluate on this file instead (all its events); default: the checkpoint's data"
    )
    data_type: str | None = option(
        None, "type of --data_path (default: the checkpoint's)", choices=DATA_TYPES
    )
    split: str = option(
        "auto",
        "events: auto = the checkpoint's test split (another file: all its events)",
        choices=SPLITS,
    )
    max_events: int | None = option(None, "evaluate the first N (>= 1) events only")
    min_cluster_size: int | None = option(None, "HDBSCAN min_cluster_size (default: checkpoint)")
    min_samples: int | None = option(None, "HDBSCAN min_samples (default: checkpoint)")
    cluster_implementation: str = option(
        "hdbscan", "HDBSCAN implementation (same label semantics)", choices=IMPLEMENTATIONS
    )
    noise: str = option(
        "singleton",
        "HDBSCAN outliers: singleton tracks, or unassigned (in no track)",
        choices=NOISE_POLICIES,
    )
    one_track_fallback: bool = option(
        True, "an event where HDBSCAN finds no cluster is one track (off: as published)"
    )
    cluster_jobs: int = option(-1, "clustering processes (-1: all cores)")
    batch_size: int = option(256, "events per model forward pass (of average size)")
    device: str = option("cpu", "torch device of the model (cpu, cuda, cuda:1, ...)")
    threads: int = option(
        0,
        "torch CPU threads; 0: OMP_NUM_THREADS if set, else 1 (fast on a busy machine)",
        flags=("--cpu_threads",),
    )
    output: str | None = option(None, "write the metrics as JSON to this file")

    def __post_init__(self) -> None:
        # Caught here, not when an empty set reaches the figures or the timing tables.
        if self.max_events is not None and self.max_events < 1:
            raise UserError(f"--max_events must be at least 1 (got {self.max_events})")
        if self.threads < 0:
            raise UserError(f"--threads must be 0 (automatic) or more (got {self.threads})")


@dataclass
class EvaluationConfig(EvaluationOptions):
    """test.py's settings: the shared ones plus efficiencies, grid search and figures."""

    definition: str = option(
        "trackformers", "efficiency definition of the headline numbers", choices=DEFINITIONS
    )
    pt_min: float = option(0.0, "pT threshold of the efficiencies in GeV (needs TrackML pT)")
    grid_search: bool = option(
        False, "tune min_cluster_size / min_samples on the validation split first"
    )
    grid_min_cluster_size: tuple[int, ...] = option(
        DEFAULT_GRID_MIN_CLUSTER_SIZE, "grid search: min_cluster_size values"
    )
    grid_min_samples: tuple[int, ...] = option(
        DEFAULT_GRID_MIN_SAMPLES, "grid search: min_samples values"
    )
    output_dir: str | None = option(None, "write metrics.json and the PNG figures here")
    display_event: int = option(0, "event display: position of the event in the evaluated set")


def apply_threads(threads: int) -> int:
    """Set torch's CPU threads before heavy work; returns the count.

    ``threads`` > 0 is used as given. 0 (automatic) is ``OMP_NUM_THREADS`` when the
    environment sets it, else one thread: measured (benchmarks/results_threads_cpu.md),
    one thread is about as fast as two on an idle 2-core machine, and it does not
    collapse when another process competes for the cores, as torch's default (a
    spinning thread per core) does. A model on a GPU needs few host threads.
    """
    import torch  # lazy: --help must not import torch

    chosen = threads
    if threads == 0:
        environment = os.environ.get("OMP_NUM_THREADS", "")
        chosen = max(1, int(environment)) if environment.isdigit() else 1
    torch.set_num_threads(chosen)
    return chosen


def thread_note(threads: int) -> str:
    """``"1 thread"`` / ``"4 threads"``."""
    return f"{threads} thread" + ("" if threads == 1 else "s")


def announce_config(config: Any, show: bool = True) -> int:
    """Apply ``config.threads`` (``apply_threads``) and, when ``show``, print the line every
    command starts with: ``config: <the dataclass as sorted JSON> (N threads)``; returns N."""
    threads = apply_threads(config.threads)
    if show:
        print("config:", json.dumps(asdict(config), sort_keys=True), f"({thread_note(threads)})")
    return threads


def check_writable_file(path: str | os.PathLike[str], option_name: str) -> None:
    """Refuse (UserError naming ``path``) an output file that could not be written.

    Called before any work starts, so a typo in an output path costs nothing: the file
    must not be a directory, and it (if it exists) or the nearest existing folder above
    it must be writable. Nothing is created.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise UserError(f"{path}: {option_name} is a directory, not a file")
    if os.path.exists(target):
        if not os.access(target, os.W_OK):
            raise UserError(f"{path}: {option_name} is not writable")
        return
    _check_creatable(os.path.dirname(target), path, option_name)


def check_writable_dir(path: str | os.PathLike[str], option_name: str) -> None:
    """Refuse (UserError naming ``path``) an output folder that could not be written."""
    target = os.path.abspath(os.fspath(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"{path}: {option_name} is a file, not a folder")
    _check_creatable(target, path, option_name)


def _check_creatable(folder: str, shown: str | os.PathLike[str], option_name: str) -> None:
    """``folder`` exists and is writable, or can be created under a writable ancestor."""
    ancestor = folder
    while not os.path.exists(ancestor):
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            break
        ancestor = parent
    if not os.path.isdir(ancestor):
        raise UserError(f"{shown}: {option_name} lies under {ancestor}, which is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{shown}: {option_name} cannot be written ({ancestor} is read-only)")
