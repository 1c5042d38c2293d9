"""The held-out test sets of the shipped TrackML (TML) models, built from a small definition.

A TML model is scored on two sets of sub-events drawn with the project's sub-event builder
(``data_processing.trackml_data``, independent draws of N particles, no noise):

- "real": sub-events of the real TrackML sample event ``event000000001`` (5,527 hits;
  in ``../shared/data/trackml_sample`` beside the repository, not shipped with it; the
  environment variable ``TRACKFORMERS_TRACKML_SAMPLE`` may name another event prefix);
- "simulated": sub-events of full events simulated by ``data_processing.trackml_sim`` with
  a seed and event ids the training events never used.

Only the definition travels (``models/manifest.json`` and the checkpoint's ``test_set``:
the builder's options and seeds, a few numbers); the files are built into ``data/tml/``
the first time and reused. A real-hit set cannot be built without the sample:
``build_test_set`` then returns None and the caller says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where the real sample lives in the project's layout (``../shared`` beside the repo).
DEFAULT_REAL_EVENT = REPO_ROOT.parent / "shared" / "data" / "trackml_sample" / "event000000001"
#: Marks a checkpoint ``test_set`` (and a manifest entry) as TML sub-event sets.
KIND = "trackml_sub_events"
#: Sub-events drawn per simulated test event (full sets: 2,000 = 4 events x 500).
SIM_SUB_EVENTS_PER_EVENT = 500


@dataclass(frozen=True)
class TMLTestSet:
    """One test set: ``n_sub_events`` sub-events of ``particles`` ("MIN-MAX") particles.

    source: "real" (the sample event) or "simulated" (``sim_seed``, events from
        ``first_event_id``, ceil(n_sub_events / 500) of them, n_sub_events / events each).
    seed: the sub-event builder's seed.
    """

    source: str
    particles: str
    n_sub_events: int = 2000
    seed: int = 1
    sim_seed: int = 1
    first_event_id: int = 1000

    def __post_init__(self) -> None:
        if self.source not in ("real", "simulated"):
            raise ValueError(f"unknown TML test-set source {self.source!r}")
        if self.n_sub_events < 1:
            raise ValueError(f"n_sub_events must be >= 1, got {self.n_sub_events}")

    @property
    def sim_events(self) -> int:
        return math.ceil(self.n_sub_events / SIM_SUB_EVENTS_PER_EVENT)

    def file_name(self) -> str:
        if self.source == "real":
            return f"real_test_{self.particles}_{self.n_sub_events}_seed{self.seed}.parquet"
        return (
            f"sim{self.sim_seed}_test_{self.particles}_{self.n_sub_events}_seed{self.seed}.parquet"
        )


def definition_sets(test_set: dict[str, Any], n_sub_events: int | None = None) -> list[TMLTestSet]:
    """The sets of a ``test_set`` definition ({"kind": KIND, "particles", "seed", ...}).

    ``n_sub_events`` overrides the size (a CI set: a smaller set with the same seeds).
    """
    if test_set.get("kind") != KIND:
        raise ValueError(f"not a TML test-set definition: {test_set}")
    size = n_sub_events or int(test_set["n_sub_events"])
    return [
        TMLTestSet(
            source,
            test_set["particles"],
            size,
            int(test_set["seed"]),
            int(test_set["sim_seed"]),
            int(test_set["first_event_id"]),
        )
        for source in test_set["sources"]
    ]


def real_event_prefix() -> Path:
    """The real sample's event prefix (``TRACKFORMERS_TRACKML_SAMPLE`` overrides)."""
    return Path(os.environ.get("TRACKFORMERS_TRACKML_SAMPLE", DEFAULT_REAL_EVENT))


def real_sample_available() -> bool:
    prefix = real_event_prefix()
    return any(Path(f"{prefix}-hits{ext}").exists() for ext in (".csv.gz", ".csv"))


def build_test_set(
    spec: TMLTestSet, data_dir: str | Path = REPO_ROOT / "data" / "tml"
) -> Path | None:
    """The hit-table file of ``spec`` in ``data_dir`` (built first if absent), or None
    for a real-hit set when the real sample is not there."""
    from data_processing.common import parse_count_range
    from data_processing.trackml_data import SubEventConfig, convert_events

    folder = Path(data_dir)
    path = folder / spec.file_name()
    if path.exists():
        return path
    low_high = parse_count_range(spec.particles, "particles per sub-event")
    if spec.source == "real":
        if not real_sample_available():
            return None
        config = SubEventConfig(low_high, spec.n_sub_events, seed=spec.seed)
        inputs: Path | list[Path] = real_event_prefix()
    else:
        from data_processing.trackml_sim import SimConfig, simulate_events

        events = spec.sim_events
        sim_dir = folder / f"sim{spec.sim_seed}_events_{spec.first_event_id}_{events}"
        if not sim_dir.exists():
            simulate_events(sim_dir, SimConfig(seed=spec.sim_seed), events, spec.first_event_id)
        per_event = spec.n_sub_events // events
        if per_event * events != spec.n_sub_events:
            raise ValueError(
                f"{spec}: {spec.n_sub_events} sub-events do not split evenly over {events} events"
            )
        config = SubEventConfig(low_high, per_event, seed=spec.seed)
        inputs = sim_dir
    folder.mkdir(parents=True, exist_ok=True)
    convert_events(inputs, path, config)
    return path


def default_test_file(
    test_set: dict[str, Any],
    n_sub_events: int | None = None,
    data_dir: str | Path = REPO_ROOT / "data" / "tml",
) -> Path:
    """The file a checkpoint's TML ``test_set`` is scored on by default: its first set
    that can be built (the real-hit set when the sample is there), printing which."""
    for spec in definition_sets(test_set, n_sub_events):
        path = build_test_set(spec, data_dir)
        if path is not None:
            print(f"TML test set: {spec.source} hits, {spec.n_sub_events} sub-events ({path})")
            return path
        print(f"TML test set: no real sample at {real_event_prefix()}; {spec.source} set skipped")
    raise FileNotFoundError(f"no TML test set of {test_set} can be built")
