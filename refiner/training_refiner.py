"""Train the refiner: a TransformerRegressor on single-particle hit groups.

Usage:
    python -m refiner.training_refiner --base_model runs/base.pt --model_name runs/refiner.pt
    python -m refiner.training_refiner --source_path data/hel.csv --data_type helical \
        --merge_fraction 0.5 --nr_epochs 10 --embedding_size 32

The group options below choose where the groups come from; every other option is the
main training CLI's (``python training.py --help``) and goes to the one training loop
(``training.main``) unchanged: this script only writes the group file and points
``--data_path`` at it.

Which source events: with ``--base_model``, the base checkpoint's data file (simulated
again into ./data when a fresh clone lacks it, see ``evaluation.checkpoint_data``), data
type and split; ``--source_split train_val`` (default) keeps the base model's training and
validation events, so the refiner never sees the events the base is tested on. Without
it, ``--source_path`` (default: the main job's generated data set) split with
``--split_seed`` and the training split fractions, which matches a base model trained on
that file with that seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import training
from data_processing.data_files import DataSource, ensure_data
from data_processing.data_types import DATA_TYPES
from data_processing.dataset import SPLIT_FRACTIONS
from data_processing.derived_data import EventSelection
from data_processing.errors import UserError, run_cli
from evaluation.checkpoint_data import training_data_path
from evaluation.options import add_dataclass_arguments, config_from_namespace, new_parser, option
from refiner.dataset import (
    GroupConfig,
    GroupSummary,
    build_group_file,
    default_group_path,
)

if TYPE_CHECKING:
    from training_loop import TrainResult

SOURCE_SPLITS = ("train", "train_val", "all")


@dataclass
class RefinerDataConfig:
    """Where the refiner's hit groups come from (printed at start)."""

    base_model: str | None = option(
        None, "base checkpoint: take its data file, data type and split from it"
    )
    source_path: str | None = option(
        None, "else take the groups from this file (none: the main job's default data)"
    )
    data_type: str | None = option(
        None, "type of --source_path (not needed for the default data)", choices=DATA_TYPES
    )
    source_split: str = option(
        "train_val", "which events of the source give groups", choices=SOURCE_SPLITS
    )
    split_seed: int = option(0, "split seed when there is no --base_model")
    groups_path: str | None = option(None, "group file to write (default: next to the source)")
    min_group_hits: int = option(GroupConfig.min_hits, "smallest particle group kept")
    merge_fraction: float = option(
        GroupConfig.merge_fraction,
        "share of groups that also get hits of another particle, so the refiner learns "
        "impure clusters",
    )
    group_seed: int = option(0, "seed of the merges")

    def __post_init__(self) -> None:
        if self.source_split not in SOURCE_SPLITS:
            raise UserError(f"source_split must be one of {SOURCE_SPLITS}")

    def group_config(self) -> GroupConfig:
        return GroupConfig(self.min_group_hits, self.merge_fraction, self.group_seed)


def resolve_source(config: RefinerDataConfig) -> tuple[Path, str, EventSelection | None]:
    """(source file, data type, which of its events; None = all) for ``config``."""
    if config.base_model is not None:
        from checkpoint import load_checkpoint  # lazy: --help must not import torch

        state = load_checkpoint(config.base_model)
        data = state["data"]
        # A shipped base model's training file is absent from a fresh clone (data/ is
        # git-ignored): it is simulated again, as evaluation does.
        path = (
            Path(config.source_path)
            if config.source_path
            else training_data_path(state, config.base_model)
        )
        data_type = data["data_type"]
        fractions, seed = tuple(data["split_fractions"]), data["split_seed"]
    elif config.source_path is not None:
        if config.data_type is None:
            raise UserError("--source_path needs --data_type (linear, helical or trackml)")
        path, data_type = Path(config.source_path), config.data_type
        fractions, seed = SPLIT_FRACTIONS, config.split_seed
    else:
        default = training.TrainConfig(seed=config.split_seed)
        path, data_type = ensure_data(DataSource.of(default)), default.data_type
        fractions, seed = SPLIT_FRACTIONS, config.split_seed
    if config.source_split == "all":
        return path, data_type, None
    parts = ("train",) if config.source_split == "train" else ("train", "val")
    return path, data_type, EventSelection(parts, fractions, seed)


def prepare_groups(config: RefinerDataConfig) -> tuple[GroupSummary, str]:
    """Write the group file of ``config``; returns its summary and the data type."""
    path, data_type, selection = resolve_source(config)
    tag = f"{config.source_split}_m{config.merge_fraction:g}_s{config.group_seed}"
    out = default_group_path(path, data_type, tag)
    if config.groups_path:
        out = Path(config.groups_path)
    summary = build_group_file(path, data_type, out, config.group_config(), selection)
    print(
        f"groups: {summary.n_groups} from {summary.n_source_events} events of {path} "
        f"({summary.n_hits} hits, {summary.n_merged_groups} merged groups with "
        f"{summary.n_foreign_hits} foreign hits, {summary.n_dropped_particles} particles "
        f"with < {config.min_group_hits} hits dropped) -> {summary.path}"
    )
    return summary, data_type


def train_refiner(
    data_config: RefinerDataConfig, train_argv: list[str] | None = None
) -> TrainResult:
    """Write the groups, then run the one training loop on them.

    ``train_argv`` are main-training CLI options (e.g. ``["--nr_epochs", "5"]``); the data
    path and type are set here. The refiner's test split is groups, whose TrackML score
    says nothing, so evaluation is off unless ``--evaluate`` is given.
    """
    train_argv = list(train_argv or [])
    if any(a == "--data_path" or a.startswith("--data_path=") for a in train_argv):
        raise UserError("the refiner's data are groups: use --source_path, not --data_path")
    summary, data_type = prepare_groups(data_config)
    # An event of the group file holds one particle, or one and part of a second when
    # merged: that is the track configuration the run prints and stores.
    defaults = training.TrainConfig(
        data_path=str(summary.path),
        data_type=data_type,
        tracks="1-2" if data_config.merge_fraction > 0 else "1",
        model_name="runs/refiner.pt",
        evaluate=False,
    )
    return training.main(train_argv, defaults)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        __doc__.splitlines()[0],
        prog="python -m refiner.training_refiner",
        epilog="All other options are the main training CLI's (python training.py --help).",
    )
    return add_dataclass_arguments(parser, RefinerDataConfig)


def main(argv: list[str] | None = None) -> TrainResult:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_arg_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        print("\nmain training options:")
        training.main(["--help"])
    args, train_argv = parser.parse_known_args(argv)
    # --data_type is also a training option: the group file has the source's type.
    data_config = config_from_namespace(RefinerDataConfig, args)
    print("refiner data config:", json.dumps(asdict(data_config), sort_keys=True))
    return train_refiner(data_config, train_argv)


if __name__ == "__main__":
    run_cli(main)
