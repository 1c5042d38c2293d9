"""Train the TransformerRegressor (exact attention) and evaluate it on the test split.

``python training.py`` with no arguments is the project's main job: it generates (once)
a small REDVID-style data set of 3-track linear events under ./data, trains, evaluates
on the held-out test split and prints the TrackML score.

This file is the command line: the settings and their options are
``training_config.py``, the loop is ``training_loop.py`` (imported only once the options
are parsed, so ``python training.py --help`` answers without loading torch). Scripts and
tests that drive the loop import ``training_loop`` themselves.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from data_processing.errors import run_cli
from evaluation.options import announce_config
from training_config import TrainConfig, config_from_args

if TYPE_CHECKING:
    from training_loop import TrainResult

__all__ = ["TrainConfig", "config_from_args", "main"]


def main(argv: list[str] | None = None, defaults: TrainConfig | None = None) -> TrainResult:
    """Parse ``argv`` (``defaults``: the options' defaults), print the config, train
    and evaluate (``training_loop.train``); returns its TrainResult."""
    config = config_from_args(argv, defaults)
    # Under torchrun every rank runs this; one of them speaks.
    is_main = int(os.environ.get("RANK", "0")) == 0
    announce_config(config, show=is_main)
    from training_loop import train  # lazy: the options are parsed without torch

    result = train(config)
    if is_main:
        print(f"finished in {result.seconds:.1f} s; checkpoint {result.checkpoint}")
    return result


if __name__ == "__main__":
    run_cli(main)
