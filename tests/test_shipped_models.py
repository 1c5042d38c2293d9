"""The shipped models of models/: every checkpoint loads and scores above its floor.

The floors (models/manifest.json) sit a little below each model's score on its 200-event
CI test set, so a change in the data, model, inference, clustering or scoring code that
costs accuracy fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint import load_checkpoint
from evaluation.shipped_models import (
    MODELS_DIR,
    ShippedModel,
    evaluate_model,
    package,
    read_manifest,
    results_table,
)

MANIFEST = read_manifest()
MAX_CHECKPOINT_BYTES = 5_000_000


@pytest.fixture(scope="module")
def test_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("test_sets")


def test_manifest_and_checkpoints_match() -> None:
    shipped = sorted(p.stem for p in MODELS_DIR.glob("*.pt"))
    assert shipped == sorted(m.name for m in MANIFEST.models)
    assert MANIFEST.test_events >= 2000 and MANIFEST.test_seed != 0  # training data: seed 0
    for model in MANIFEST.models:
        assert model.checkpoint().stat().st_size < MAX_CHECKPOINT_BYTES
        state = load_checkpoint(model.checkpoint())
        assert state["inference_only"] and state["optimizer_state_dict"] == {}
        assert state["test_set"] == MANIFEST.test_set(model)
        assert state["data"]["split_seed"] != MANIFEST.test_seed
        # A floor that every model passes is no test: the floors are near the scores.
        # TML models (test_sets) trained on a CPU budget score lower (models/README.md).
        assert (0.9 if model.test_sets is None else 0.3) <= model.ci_floor < 1.0


@pytest.mark.parametrize("model", MANIFEST.models, ids=lambda m: m.name)
def test_shipped_model_scores_above_its_floor(model: ShippedModel, test_sets: Path) -> None:
    n_events = MANIFEST.ci_events_of(model)
    metrics = evaluate_model(model, MANIFEST, n_events, cluster_jobs=1, data_dir=test_sets)
    assert metrics["n_events"] == n_events
    assert metrics["trackml_score"] >= model.ci_floor, (
        f"{model.name}: TrackML score {metrics['trackml_score']:.4f} fell below its floor "
        f"{model.ci_floor} on the {n_events}-event CI set"
    )
    if model.test_sets is None:  # TML sub-events hold 1-2-hit particles: DM < score
        assert metrics["double_majority"] >= model.ci_floor - 0.02


def test_package_checks_the_data_set_and_slims_the_checkpoint(tmp_path: Path) -> None:
    by_name = {m.name: m for m in MANIFEST.models}
    source = by_name["hel_3"].checkpoint()
    written = package(source, by_name["hel_3"], MANIFEST, folder=tmp_path)
    assert load_checkpoint(written)["test_set"]["track_type"] == "helical"
    with pytest.raises(ValueError, match=r"hel_3\.pt: trained on helical 3.*lin_3"):
        package(source, by_name["lin_3"], MANIFEST, folder=tmp_path)


def test_results_table_states_the_gap_to_the_published_score() -> None:
    model = MANIFEST.models[0]
    metrics = {"n_events": 100, "trackml_score": 0.9, "trackml_score_std": 0.05, "perfect": 0.8}
    metrics |= {"double_majority": 0.85, "lhc": 0.95}
    row = results_table([(model, metrics, 1.0)]).splitlines()[2]
    gap = 0.9 - model.published["trackml_score"]
    assert row.startswith(f"| {model.name} | 100 | 0.9000 ± 0.0050 / ")
    assert row.endswith(f"{gap:+.4f} |")
