"""The TrackML (TML) models: their test-set definitions, training sets and checkpoints.

- The real-hit test set is a small definition (seed + builder options): building it twice
  gives the same hits, another seed other hits (needs the real sample in ../shared).
- A TML training set built from a simulated event carries the paper's targets, computed
  here independently from the simulated particles' raw momenta.
- Every shipped TML checkpoint scores above its manifest floor on a small real-hit set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_processing.hit_table import read_hit_table
from data_processing.trackml_data import SubEventConfig, convert_events
from data_processing.trackml_sim import SimConfig, simulate_events
from evaluation.shipped_models import MODELS_DIR, evaluate_file, read_manifest
from evaluation.tml_test_sets import KIND, TMLTestSet, build_test_set, definition_sets

MANIFEST = read_manifest()
TML_MODELS = [m for m in MANIFEST.models if m.test_sets is not None]


@pytest.fixture
def real_sample(trackml_sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    prefix = trackml_sample_dir / "event000000001"
    monkeypatch.setenv("TRACKFORMERS_TRACKML_SAMPLE", str(prefix))
    return prefix


def _hits(path: Path) -> pd.DataFrame:
    return read_hit_table(path)[["event_id", "hit_id", "particle_id"]]


def test_real_hit_test_set_is_fixed_by_its_definition(real_sample: Path, tmp_path: Path) -> None:
    spec = TMLTestSet("real", "10-50", n_sub_events=40, seed=1)
    first = _hits(build_test_set(spec, tmp_path / "a"))
    again = _hits(build_test_set(spec, tmp_path / "b"))
    other = _hits(build_test_set(TMLTestSet("real", "10-50", 40, seed=2), tmp_path / "c"))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert first.event_id.nunique() == 40
    particles = first[first.particle_id != 0].groupby("event_id").particle_id.nunique()
    assert particles.between(10, 50).all() and particles.nunique() > 5
    assert (first.particle_id != 0).all()  # no noise kept, as the paper's sub-events


def test_test_set_definition_round_trips_through_the_manifest() -> None:
    for model in TML_MODELS:
        definition = MANIFEST.test_set(model)
        assert definition["kind"] == KIND and definition["particles"] == model.tracks
        sets = definition_sets(definition, 200)
        assert [s.source for s in sets] == ["real", "simulated"]
        assert all(s.n_sub_events == 200 and s.seed != 0 for s in sets)  # training: seed 0


def test_training_set_targets_are_those_of_the_raw_momentum(tmp_path: Path) -> None:
    simulate_events(tmp_path / "events", SimConfig(seed=5, n_particles=300), 1, 7)
    out = tmp_path / "train.parquet"
    convert_events(tmp_path / "events", out, SubEventConfig((10, 50), 6, seed=0))
    table = read_hit_table(out)
    particles = pd.read_csv(tmp_path / "events" / "event000000007-particles.csv.gz")
    true = table[["particle_id"]].merge(
        particles[["particle_id", "px", "py", "pz", "q"]].add_prefix("true_"),
        left_on="particle_id",
        right_on="true_particle_id",
        how="left",
        validate="many_to_one",
    )
    assert true.true_px.notna().all() and table.event_id.nunique() == 6
    p = np.sqrt(true.true_px**2 + true.true_py**2 + true.true_pz**2)
    pt = np.hypot(true.true_px, true.true_py)
    np.testing.assert_allclose(table.theta, np.arccos(true.true_pz / p), atol=1e-5)
    np.testing.assert_allclose(table.sin_phi, true.true_py / pt, atol=1e-5)
    np.testing.assert_allclose(table.cos_phi, true.true_px / pt, atol=1e-5)
    np.testing.assert_array_equal(table.q, true.true_q)
    assert set(np.unique(table.q)) == {-1.0, 1.0}
    per_event = table.groupby("event_id").particle_id.nunique()
    assert per_event.between(10, 50).all()


@pytest.mark.parametrize("model", TML_MODELS, ids=lambda m: m.name)
def test_shipped_tml_model_scores_above_its_floor_on_real_hits(
    model, real_sample: Path, tmp_path: Path
) -> None:
    assert (MODELS_DIR / f"{model.name}.pt").exists()
    spec = definition_sets(MANIFEST.test_set(model), 200)[0]
    assert spec.source == "real"
    metrics = evaluate_file(model, build_test_set(spec, tmp_path), cluster_jobs=1)
    assert metrics["n_events"] == 200
    assert metrics["trackml_score"] >= model.ci_floor, (
        f"{model.name}: {metrics['trackml_score']:.4f} below its floor {model.ci_floor}"
    )
