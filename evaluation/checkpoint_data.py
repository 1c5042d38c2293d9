"""The data files a checkpoint names, simulated again when a fresh clone lacks them.

A checkpoint records the absolute path of its training data (``state["data"]["path"]``)
and, when shipped, the settings of its own test set (``state["test_set"]``). ``data/`` is
git-ignored, so on another machine or a fresh clone those files are missing. Both kinds
are REDVID-style simulations that a ``SimulationConfig`` fully determines, so they are
rebuilt into the repository's ``data/`` folder under the same name (the one
``data_processing.redvid.cached_dataset_path`` gives): one shared path for the test set
and the training data, so evaluation, grid search and the refiner all agree.

A training file the user supplied (``--data_path`` at training time) cannot be rebuilt:
asking for it raises FileNotFoundError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_processing.data_files import DataSource, data_folder, simulation_config
from data_processing.data_types import data_type_named
from data_processing.redvid import SimulationConfig, cached_dataset_path, ensure_dataset


def simulated_data(simulation: SimulationConfig) -> Path:
    """The CSV of ``simulation`` in ``data_files.data_folder()``, simulated first if absent."""
    return ensure_dataset(simulation, data_folder())


def training_simulation(state: dict[str, Any]) -> SimulationConfig | None:
    """The simulation that produced the checkpoint's training data, or None.

    Only a set that training generated itself can be rebuilt: ``train_config`` has no
    ``data_path`` (data_files.ensure_data then simulates the default set of the stored
    ``data_type``, ``tracks``, ``n_events`` and ``seed``), the type is not TrackML, and the
    stored file name is exactly that set's cached name (so the settings are the ones that
    made the file, not later defaults).
    """
    train = state.get("train_config")
    needed = ("data_path", "data_type", "tracks", "n_events", "seed")
    if not isinstance(train, dict) or any(name not in train for name in needed):
        return None
    if train["data_path"] is not None or not data_type_named(train["data_type"]).simulated:
        return None
    # The one mapping from a run's data settings to a simulation, the one training uses.
    simulation = simulation_config(DataSource.of(train))
    stored_name = Path(state["data"]["path"]).name
    return simulation if cached_dataset_path(simulation, ".").name == stored_name else None


def training_data_path(state: dict[str, Any], checkpoint: str | Path) -> Path:
    """The checkpoint's training data file, simulated again into ``data/`` if missing.

    Args:
        state: the loaded checkpoint.
        checkpoint: its file name (for the messages).

    Returns:
        The stored path if it exists, else the rebuilt file (printing one line saying so).

    Raises:
        FileNotFoundError: the stored file is missing and is not a set training generated.
    """
    stored = Path(state["data"]["path"])
    if stored.exists():
        return stored
    simulation = training_simulation(state)
    if simulation is None:
        raise FileNotFoundError(
            f"{checkpoint}: its training data {stored} does not exist and cannot be "
            "simulated again (training did not generate it); restore that file or give a "
            "copy of it explicitly (--data_path, or --source_path for the refiner)"
        )
    path = cached_dataset_path(simulation, data_folder())
    action = "using the copy" if path.exists() else "simulating it again from its settings into"
    print(
        f"{checkpoint}: training data {stored} not found; {action} {path} "
        f"({simulation.n_events} {simulation.track_type} events, tracks {simulation.tracks}, "
        f"seed {simulation.seed})"
    )
    return simulated_data(simulation)


def is_training_file(path: str | Path, state: dict[str, Any]) -> bool:
    """Whether ``path`` is the checkpoint's training data, as stored or as rebuilt."""
    candidates = [Path(state["data"]["path"])]
    simulation = training_simulation(state)
    if simulation is not None:
        candidates.append(cached_dataset_path(simulation, data_folder()))
    return Path(path).resolve() in {c.resolve() for c in candidates}
