"""Which data file a run reads: a given file, or the simulated default set of its settings.

Training, evaluation and the refiner all resolve their data file here, so that a checkpoint's
training file and a rebuilt copy of it on a fresh clone get the same path. Simulated sets
are cached in the repository's git-ignored ``data/`` folder under the name
``redvid.cached_dataset_path`` gives (it holds every setting that made the set).

``DataSource`` holds the five settings that determine the file; ``DataSource.of`` takes
them from any config with those field names (a training config, a checkpoint's stored
``train_config``), so this module needs nothing from the training code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from data_processing.data_types import data_type_named
from data_processing.errors import UserError
from data_processing.redvid import SimulationConfig, cached_dataset_path, ensure_dataset

#: The repository root; simulated sets go to ``REPO_ROOT / "data"`` (tests point it elsewhere).
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DataSource:
    """The settings that determine a run's data file.

    data_path: a given file; None = the simulated default set of the other settings.
    data_type: a registered data type (``data_types.DATA_TYPES``).
    tracks: tracks per event of the simulated set ("3", "10-50", ...).
    n_events: events of the simulated set.
    seed: seed of the simulation (a run's seed, which also seeds its split).
    """

    data_path: str | None = None
    data_type: str = "linear"
    tracks: str = "3"
    n_events: int = 4000
    seed: int = 0

    @classmethod
    def of(cls, config: object | Mapping[str, Any]) -> DataSource:
        """The DataSource of a config (attributes) or a mapping with these field names;
        fields it lacks keep their defaults."""
        if isinstance(config, Mapping):
            values = {f.name: config[f.name] for f in fields(cls) if f.name in config}
        else:
            values = {
                f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)
            }
        return cls(**values)


def simulation_config(source: DataSource) -> SimulationConfig:
    """The REDVID-style simulation of the default data set of ``source``."""
    return SimulationConfig(
        n_events=source.n_events,
        tracks=source.tracks,
        track_type=source.data_type,
        seed=source.seed,
    )


def data_folder() -> Path:
    """The repository's git-ignored ``data/`` folder, where simulated sets are cached."""
    return REPO_ROOT / "data"


def default_data_path(source: DataSource) -> Path:
    """Where the generated default data set of ``source`` is cached (``data_folder``)."""
    return cached_dataset_path(simulation_config(source), data_folder())


def ensure_data(source: DataSource) -> Path:
    """The data file to read: ``source.data_path``, else the default simulated set,
    generated once into ``data_folder()`` if absent.

    Raises UserError for a data type that cannot be simulated and has no ``data_path``.
    """
    if source.data_path is not None:
        return Path(source.data_path)
    if not data_type_named(source.data_type).simulated:
        raise UserError(
            f"--data_type {source.data_type} needs --data_path (see data_processing.trackml_data)"
        )
    return ensure_dataset(simulation_config(source), data_folder())
