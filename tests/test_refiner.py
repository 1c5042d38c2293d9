"""Refiner: group data set, training through the one loop, splitting merged clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import training
from checkpoint import load_checkpoint
from data_processing.dataset import Normaliser, load_events
from data_processing.derived_data import EventSelection
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation import pipeline
from evaluation import test as evaluation_test
from evaluation.inference import score_reconstruction
from refiner import refined_test
from refiner.dataset import GroupConfig, build_group_file
from refiner.training_refiner import RefinerDataConfig, train_refiner
from tests.oracles import DirectionOracle, straight_track_event


@pytest.fixture(scope="module")
def helical_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "hel.csv"
    config = SimulationConfig(
        n_events=150, tracks="3-6", track_type="helical", noise_hits_per_event=3, seed=5
    )
    return generate_dataset(config, path, progress=False)


def test_groups_are_single_particles_with_their_own_targets(
    helical_file: Path, tmp_path: Path
) -> None:
    source = load_events(helical_file, "helical")
    summary = build_group_file(
        helical_file, "helical", tmp_path / "g.csv", GroupConfig(merge_fraction=0.0)
    )
    groups = load_events(summary.path, "helical")
    raw = pd.read_csv(summary.path, sep=";")

    # One group per particle with >= 3 hits; noise (track_id 0) is in no group.
    particles = pd.DataFrame({"event": source.hit_event_ids(), "particle": source.particle_id})
    counts = particles[particles.particle > 0].value_counts().sort_index()
    assert summary.n_groups == groups.n_events == int((counts >= 3).sum())
    assert summary.n_dropped_particles == int((counts < 3).sum())
    assert groups.n_hits == summary.n_hits == int(counts[counts >= 3].sum())
    assert (groups.particle_id > 0).all()
    assert groups.inputs.shape == (groups.n_hits, 3)
    assert groups.targets.shape == (groups.n_hits, 3)
    assert groups.target_names == source.target_names
    # Each group: one particle, all of its hits, traceable to (source event, particle).
    per_group = raw.groupby("event_id").agg(
        n=("track_id", "size"),
        particles=("track_id", "nunique"),
        event=("source_event", "first"),
        particle=("track_id", "first"),
    )
    assert (per_group.particles == 1).all()
    np.testing.assert_array_equal(
        per_group.n.to_numpy(),
        counts.loc[list(zip(per_group.event, per_group.particle, strict=True))],
    )
    # Targets are the particle's: a hit's (a, b, d) are constant within a group.
    spread = pd.DataFrame(groups.targets).groupby(groups.hit_event_index()).std().to_numpy()
    assert np.nanmax(spread) < 1e-6

    # Only the selected source events are used (the base model's train + val split).
    selection = EventSelection(("train", "val"), (0.7, 0.15, 0.15), seed=0)
    pure = GroupConfig(merge_fraction=0.0)
    part = build_group_file(helical_file, "helical", tmp_path / "tv.csv", pure, selection)
    chosen = source.event_id[selection.positions(source.n_events)]
    assert part.n_source_events == len(chosen) == 150 - 23  # all but the 15 % test split
    assert set(pd.read_csv(part.path, sep=";")["source_event"]) == set(chosen)


def test_merged_groups_hold_a_part_of_a_second_particle(helical_file: Path, tmp_path: Path) -> None:
    config = GroupConfig(merge_fraction=1.0, seed=3)
    summary = build_group_file(helical_file, "helical", tmp_path / "m.csv", config)
    raw = pd.read_csv(summary.path, sep=";")
    per_group = raw.groupby("event_id")["track_id"].agg(["nunique", "size"])
    # Every event has >= 3 particles, so every group got a partner.
    assert summary.n_merged_groups == summary.n_groups
    assert (per_group["nunique"] == 2).all()
    assert len(raw) == summary.n_hits
    own = raw.groupby("event_id")["track_id"].transform("first")
    assert int((raw.track_id != own).sum()) == summary.n_foreign_hits
    # Deterministic for a seed.
    again = build_group_file(helical_file, "helical", tmp_path / "m2.csv", config)
    assert pd.read_csv(again.path, sep=";").equals(raw)


def test_trackml_groups_round_trip_through_the_hit_table_writer(tmp_path: Path) -> None:
    from data_processing.hit_table import write_hit_table

    rng = np.random.default_rng(0)
    n = 60
    table = pd.DataFrame(
        {
            "event_id": np.repeat([7, 9], n // 2),
            "hit_id": np.tile(np.arange(n // 2), 2),
            "particle_id": rng.integers(0, 5, n) * 1000,
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "z": rng.normal(size=n),
        }
    )
    table["weight"] = (table.particle_id > 0) * 0.01
    # Targets are per particle (noise too: NaN would be allowed there as well).
    key = table.particle_id.to_numpy() // 1000
    table["theta"] = 0.5 + 0.1 * key
    table["sin_phi"] = np.sin(key)
    table["cos_phi"] = np.cos(key)
    table["q"] = np.where(key % 2 == 0, 1.0, -1.0)
    for name, value in (("source_event", 1), ("volume_id", 8), ("layer_id", 2), ("module_id", 1)):
        table[name] = value
    table["pt"], table["eta"] = 1.0, 0.0
    source = tmp_path / "tml.parquet"
    write_hit_table(table, source)

    summary = build_group_file(
        source, "trackml", tmp_path / "g.parquet", GroupConfig(min_hits=1, merge_fraction=0.0)
    )
    groups = load_events(summary.path, "trackml")
    n_particles = table[table.particle_id > 0].groupby(["event_id", "particle_id"]).ngroups
    assert groups.n_events == n_particles
    assert groups.targets.shape == (groups.n_hits, 4)
    assert set(groups.extras["source_event_id"]) == {7, 9}  # events of the source file
    assert set(groups.extras["source_event"]) == {1}  # the TrackML event they came from


def test_a_true_parameter_refiner_splits_a_merged_cluster_and_the_score_rises_to_one() -> None:
    events = straight_track_event({1: (0.6, 0.3), 2: (2.1, -2.0), 3: (1.4, 1.5)})
    # HDBSCAN merged particles 1 and 2 into track 0; particle 3 is track 1.
    base = np.where(events.particle_id == 3, 1, 0)
    assert score_reconstruction(events, base)["trackml_score"] == pytest.approx(8 / 24)

    normaliser = Normaliser.fit(events)
    oracle = DirectionOracle(normaliser)
    config = refined_test.RefineConfig(min_cluster_size=4, min_samples=2)
    result = refined_test.refine(oracle, normaliser, events, base, config)
    assert result.n_refined == 2 and result.n_split == 1  # the pure track stays whole
    assert score_reconstruction(events, result.labels)["trackml_score"] == 1.0
    assert len(np.unique(result.labels)) == 3

    # A cluster too small to hold two sub-clusters is not refined at all.
    small = refined_test.RefineConfig(min_cluster_size=4, min_hits=17)
    untouched = refined_test.refine(oracle, normaliser, events, base, small)
    assert untouched.n_refined == 0
    np.testing.assert_array_equal(untouched.labels, base)


def test_refining_keeps_a_pure_cluster_whole() -> None:
    """A pure cluster refines to one blob of parameters. Without allow_single_cluster,
    HDBSCAN must return the root's children and splits such blobs often."""
    from evaluation.clustering import cluster_event

    rng = np.random.default_rng(0)
    blobs = [rng.normal(size=(18, 3)) for _ in range(40)]
    splits = {}
    for single in (True, False):
        config = refined_test.RefineConfig(min_cluster_size=4, single_cluster=single)
        n_clusters = [len(set(cluster_event(b, config.clustering())) - {-1}) for b in blobs]
        splits[single] = sum(n >= 2 for n in n_clusters)
    assert splits[True] == 0
    assert splits[False] >= 8  # measured: 17 of these 40 blobs
    # Two well separated blobs still split with the default.
    pair = np.concatenate([blobs[0], blobs[1] + 20.0])
    config = refined_test.RefineConfig(min_cluster_size=4)
    assert len(set(cluster_event(pair, config.clustering())) - {-1}) == 2


def test_clusters_as_events_gathers_each_cluster() -> None:
    events = straight_track_event({1: (0.6, 0.3), 2: (2.1, -2.0)}, hits=5)
    labels = np.array([4, 4, 4, 4, 7, 7, 7, 7, 7, -1])
    clusters = refined_test.clusters_as_events(events, labels, min_hits=5)
    assert clusters.events.n_events == 1
    np.testing.assert_array_equal(clusters.rows, [4, 5, 6, 7, 8])
    np.testing.assert_array_equal(clusters.events.hit_id, events.hit_id[4:9])
    np.testing.assert_array_equal(clusters.events.inputs, events.inputs[4:9])


def test_short_refiner_training_lowers_the_loss_and_the_cli_reports_both_scores(
    helical_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["--embedding_size", "16", "--hidden_dim", "32", "--nr_enc_layers", "1"]
    small += ["--nr_heads", "2", "--device", "cpu", "--batch_size", "32", "--no-evaluate"]
    base_path = tmp_path / "base.pt"
    base_args = ["--data_path", str(helical_file), "--data_type", "helical", "--tracks", "1-20"]
    training.main([*base_args, "--model_name", str(base_path), "--nr_epochs", "2", *small])
    refiner_path = tmp_path / "refiner.pt"
    result = train_refiner(
        RefinerDataConfig(
            base_model=str(base_path),
            groups_path=str(tmp_path / "groups.csv"),
            merge_fraction=0.5,
        ),
        ["--model_name", str(refiner_path), "--nr_epochs", "3", *small],
    )
    assert result.val_losses[-1] < result.val_losses[0]
    printed = capsys.readouterr().out
    assert "groups:" in printed
    # The run names its own data: groups of one particle, or one and part of a second
    # (merge_fraction 0.5), not the base model's 1-20 tracks or training's default 3.
    assert '"tracks": "1-2"' in printed
    assert load_checkpoint(refiner_path)["train_config"]["tracks"] == "1-2"

    models = ["--model_name", str(base_path), "--refiner_name", str(refiner_path)]
    results = refined_test.main(
        [*models, "--cluster_jobs", "1", "--output", str(tmp_path / "r.json")]
    )
    out = capsys.readouterr().out
    assert "TrackML score:" in out and "refined" in out
    assert results["base"]["n_events"] == results["refined"]["n_events"] == 23
    for key in ("trackml_score", "perfect", "double_majority", "lhc"):
        assert 0 <= results["refined"][key] <= 1
    assert (tmp_path / "r.json").exists()
    # The base column is test.py's evaluation of the base model on the same (test) split.
    expected = pipeline.evaluate_checkpoint(
        evaluation_test.EvaluationConfig(model_name=str(base_path), cluster_jobs=1)
    )
    assert expected["n_events"] == 23
    assert results["base"]["trackml_score"] == expected["trackml_score"]
    assert 0 <= results["clusters_split"] <= results["clusters_refined"]

    # No cluster has 100000 hits: nothing is refined, and the refined labels are the base
    # labels, so every score is the base one exactly.
    untouched = refined_test.main([*models, "--cluster_jobs", "1", "--refine_min_hits", "100000"])
    assert untouched["clusters_refined"] == untouched["clusters_split"] == 0
    base_scores = {k: v for k, v in untouched["base"].items() if k != "timings_s"}
    refined_scores = {k: v for k, v in untouched["refined"].items() if k != "timings_s"}
    assert refined_scores == base_scores
    assert untouched["base"]["trackml_score"] == expected["trackml_score"]

    with pytest.raises(ValueError, match="--source_path, not --data_path"):
        train_refiner(RefinerDataConfig(base_model=str(base_path)), ["--data_path", "x.csv"])
