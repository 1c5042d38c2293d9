"""Domain decomposition: regions, wrap-around in phi, overlap duplicates, exact merge-back."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import training
import training_loop
from data_processing import domain_decomposition as dd
from data_processing.dataset import EventSet, Normaliser, load_events
from data_processing.derived_data import pair_codes
from data_processing.hit_table import read_hit_table, write_hit_table
from data_processing.redvid import SimulationConfig, generate_dataset
from data_processing.trackml_data import SubEventConfig, build_sub_events
from data_processing.trackml_events import read_event
from evaluation import decomposition as ed
from evaluation.inference import score_reconstruction
from tests.oracles import DirectionOracle, straight_track_event

PI = math.pi


def _event_set(tracks: dict[int, tuple[float, np.ndarray]], n_events: int = 1) -> EventSet:
    """Straight tracks from the origin: particle -> (theta, [hit azimuths]); hits at r 1..n.

    Every event gets the same tracks (ids shifted), so a multi-event set is tested too.
    Particle 0 hits are noise. Hit theta/phi equal the given angles exactly.
    """
    rows = []
    for event in range(n_events):
        for particle, (theta, phis) in tracks.items():
            radius = 1.0 + np.arange(len(phis))
            rows.append(
                pd.DataFrame(
                    {
                        "event_id": event,
                        "particle_id": particle,
                        "x": radius * np.sin(theta) * np.cos(phis),
                        "y": radius * np.sin(theta) * np.sin(phis),
                        "z": radius * np.cos(theta),
                        "t": float(particle),
                    }
                )
            )
    table = pd.concat(rows, ignore_index=True)
    table["hit_id"] = table.groupby("event_id").cumcount()
    table["weight"] = (table["particle_id"] != 0).astype(np.float32)
    return EventSet.from_table(table, ("x", "y", "z"), ("t",))


def _oracle_labels(split: dd.RegionSplit) -> np.ndarray:
    """Per-region labels a perfect clusterer would give: the particle, noise singletons."""
    particle = split.events.particle_id
    return np.where(particle > 0, particle, 10_000 + np.arange(len(particle)))


def _same_partition(labels: np.ndarray, events: EventSet) -> bool:
    """labels group the hits exactly as (event, particle) does (noise hits all separate)."""
    event = events.hit_event_index()
    particle = np.where(events.particle_id > 0, events.particle_id, -1 - np.arange(events.n_hits))
    n_pairs = len(np.unique(np.stack([event, labels, particle]), axis=1)[0])
    return (
        n_pairs
        == len(np.unique(np.stack([event, labels]), axis=1)[0])
        == len(np.unique(np.stack([event, particle]), axis=1)[0])
    )


def test_tracks_in_known_regions_are_split_and_merged_back_exactly() -> None:
    config = dd.DecompositionConfig.regular((0.0, PI / 2, PI), phi_regions=4, overlap=0.1)
    assert config.n_regions == 8
    tracks = {
        1: (0.8, np.full(6, -2.4)),  # band 0, sector 0 ([-pi, -pi/2))
        2: (2.2, np.full(5, 1.0)),  # band 1, sector 2 ([0, pi/2))
        3: (0.8, np.array([-0.3, -0.2, -0.05, 0.05, 0.2, 0.3, 0.4])),  # crosses phi = 0
        4: (PI / 2 + 0.3, np.full(5, 2.0)),  # band 1, sector 3
        0: (1.2, np.array([-1.0, 2.5])),  # two noise hits
    }
    events = _event_set(tracks, n_events=3)
    split = dd.split_into_regions(events, config)
    home = split.home_region.reshape(3, -1)[0]
    expected_home = np.concatenate([[0] * 6, [6] * 5, [1, 1, 1, 2, 2, 2, 2], [7] * 5, [1, 3]])
    np.testing.assert_array_equal(home, expected_home)
    # Only track 3's two hits within 0.1 rad of phi = 0 are duplicated.
    assert split.events.n_hits == events.n_hits + 3 * 2

    merged = dd.merge_region_labels(split, _oracle_labels(split))
    assert _same_partition(merged, events)
    assert score_reconstruction(events, merged)["trackml_score"] == 1.0
    # Track 3 was cut by the phi = 0 boundary: it is the one particle spanning regions.
    report = dd.decomposition_report(events, split)
    assert report["particles_split_share"] == pytest.approx(1 / 4)
    assert report["n_regions"] == 8 and report["region_events"] == 3 * 6


def test_wrap_around_at_plus_minus_pi() -> None:
    # Sector 3 of these edges is [3pi/4, 5pi/4): it straddles phi = +-pi.
    config = dd.DecompositionConfig(phi_edges=(-3 * PI / 4, -PI / 4, PI / 4, 3 * PI / 4))
    phi = np.array([PI - 0.01, -PI + 0.01, PI, -PI, 3 * PI / 4, -3 * PI / 4 - 1e-9])
    member, home = dd.region_membership(np.full(len(phi), 1.0), phi, config)
    np.testing.assert_array_equal(home, [3, 3, 3, 3, 3, 3])
    assert member.sum(axis=1).tolist() == [1, 1, 1, 1, 2, 2]  # the last two are at an edge

    # Regular sectors from -pi: a track crossing +-pi is cut, then merged back.
    config = dd.DecompositionConfig.regular(phi_regions=4, overlap=0.1)
    crossing = np.array([PI - 0.3, PI - 0.15, PI - 0.05, -PI + 0.05, -PI + 0.15, -PI + 0.3])
    events = _event_set({1: (1.0, crossing), 2: (2.0, np.full(6, 0.5))})
    split = dd.split_into_regions(events, config)
    np.testing.assert_array_equal(split.home_region, [3, 3, 3, 0, 0, 0, 2, 2, 2, 2, 2, 2])
    # The hits 0.05 rad from the wrap lie in both the last and the first sector.
    assert split.events.n_hits == events.n_hits + 2
    merged = dd.merge_region_labels(split, _oracle_labels(split))
    assert _same_partition(merged, events)
    # Without overlap the two halves share no hit and stay two tracks: score drops.
    no_overlap = dd.split_into_regions(
        events, dd.DecompositionConfig.regular(phi_regions=4, overlap=0.0)
    )
    merged = dd.merge_region_labels(no_overlap, _oracle_labels(no_overlap))
    assert len(np.unique(merged[:6])) == 2
    assert score_reconstruction(events, merged)["trackml_score"] == pytest.approx(6 / 12)


def test_overlap_duplicates_are_counted() -> None:
    # Bands split at pi/2 with 0.05 margin: theta 1.55 and 1.60 are in both bands.
    config = dd.DecompositionConfig((0.0, PI / 2, PI), (-PI, 0.0), overlap=0.05)
    tracks = {
        1: (1.55, np.full(4, 1.0)),  # band overlap: 4 duplicates
        2: (1.0, np.array([0.02, 0.5, 1.0])),  # phi 0.02 within 0.05 of the edge at 0: 1
        3: (1.60, np.array([-0.02, -1.0, PI - 0.01])),  # -0.02: 3 regions; pi-0.01: 3; -1: 1
        4: (0.5, np.full(3, -1.5)),  # no duplicates
    }
    events = _event_set(tracks)
    split = dd.split_into_regions(events, config)
    expected_copies = 4 * 2 + (2 + 1 + 1) + (4 + 2 + 4) + 3
    assert split.events.n_hits == expected_copies
    report = dd.decomposition_report(events, split)
    assert report["duplicated_hits"] == expected_copies - events.n_hits
    assert report["duplicate_share"] == pytest.approx((expected_copies - 13) / 13)
    # Only particle 3 has hits whose home regions differ (sector 0 and sector 1).
    assert report["particles_split_share"] == pytest.approx(1 / 4)
    assert report["particles_in_several_regions_share"] == pytest.approx(3 / 4)
    assert sum(report["hits_per_region"]) == expected_copies
    # A wrong link needs min_shared_hits shared hits: one shared hit does not merge.
    # Hit 0 (particle 1, home region 1) is put into particle 3's track in region 3.
    labels = _oracle_labels(split)
    labels[(split.source_row == 0) & (split.events.extras["region"] == 3)] = 3
    merged = dd.merge_region_labels(split, labels)
    assert _same_partition(merged, events)
    loose = replace(split, config=replace(config, min_shared_hits=1))
    merged = dd.merge_region_labels(loose, labels)
    assert merged[0] == merged[-4]  # particles 1 and 3 wrongly joined by one hit


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="cover"):
        dd.DecompositionConfig(theta_edges=(0.1, PI))
    with pytest.raises(ValueError, match="span less than 2 pi"):
        dd.DecompositionConfig(phi_edges=(-PI, PI))
    with pytest.raises(ValueError, match="overlap"):
        dd.DecompositionConfig(overlap=-0.1)
    with pytest.raises(ValueError, match="x, y, z"):
        events = _event_set({1: (1.0, np.zeros(3))})
        events.input_names = ("a", "b", "c")
        dd.hit_angles(events)


def test_cli_on_a_trained_model_one_region_equals_the_undivided_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = generate_dataset(
        SimulationConfig(n_events=120, tracks="3-8", track_type="linear", seed=3),
        tmp_path / "lin.csv",
        progress=False,
    )
    checkpoint = tmp_path / "m.pt"
    training_loop.train(
        training.TrainConfig(
            data_path=str(data),
            data_type="linear",
            tracks="1-20",
            model_name=str(checkpoint),
            nr_epochs=2,
            embedding_size=16,
            hidden_dim=32,
            nr_enc_layers=1,
            nr_heads=2,
            evaluate=False,
            device="cpu",
        )
    )
    results = ed.main(
        [
            "--model_name",
            str(checkpoint),
            "--merge",
            "labels",
            "params",
            "--phi_regions",
            "1",
            "4",
            "--overlap",
            "0",
            "--cluster_jobs",
            "1",
            "--output",
            str(tmp_path / "dd.json"),
        ]
    )
    out = capsys.readouterr().out
    assert "config:" in out and "undivided" in out
    one_labels, one_params, four_labels, four_params = results["splits"]
    for one in (one_labels, one_params):
        assert one["n_regions"] == 1 and one["duplicated_hits"] == 0
        assert one["trackml_score"] == pytest.approx(results["undivided"]["trackml_score"])
    for four in (four_labels, four_params):
        assert four["n_regions"] == 4 and 0 < four["trackml_score"] <= 1
    assert (four_labels["merge"], four_params["merge"]) == ("labels", "params")
    assert (tmp_path / "dd.json").exists()


def test_region_events_are_written_as_a_training_file(tmp_path: Path) -> None:
    source = generate_dataset(
        SimulationConfig(
            n_events=30, tracks="3-8", track_type="helical", noise_hits_per_event=2, seed=4
        ),
        tmp_path / "hel.csv",
        progress=False,
    )
    out = tmp_path / "regions.csv"
    source_args = ["--data_path", str(source), "--data_type", "helical"]
    regions_args = ["--phi_regions", "4", "--overlap", "0.1"]
    report = ed.main(["--write_regions", str(out), *source_args, *regions_args])
    events = load_events(source, "helical")
    split = dd.split_into_regions(events, dd.DecompositionConfig.regular(overlap=0.1))
    regions = load_events(out, "helical")
    assert regions.n_events == split.events.n_events == report["region_events"]
    np.testing.assert_array_equal(regions.sizes, split.events.sizes)
    np.testing.assert_allclose(regions.inputs, split.events.inputs, atol=1e-6)
    np.testing.assert_array_equal(regions.particle_id, split.events.particle_id)
    raw = pd.read_csv(out, sep=";")
    np.testing.assert_array_equal(raw["region"], split.events.extras["region"])
    # A simulated file's events are the original events: both columns hold their ids.
    np.testing.assert_array_equal(raw["source_event_id"], split.events.extras["source_event_id"])
    np.testing.assert_array_equal(raw["source_event"], split.events.extras["source_event_id"])


def test_trackml_region_file_keeps_the_trackml_event_number(
    trackml_sample_dir: Path, tmp_path: Path
) -> None:
    # 30 sub-events of the one TrackML event 1, with particle ids up to ~9e17.
    event = read_event(trackml_sample_dir / "event000000001")
    source = tmp_path / "tml.parquet"
    write_hit_table(build_sub_events(event, SubEventConfig((20, 40), 30, keep_noise=True)), source)
    config = dd.DecompositionConfig.regular(phi_regions=4, overlap=0.1)
    out = tmp_path / "regions.parquet"
    report = dd.write_region_file(source, "trackml", out, config)

    events = load_events(source, "trackml")
    split = dd.split_into_regions(events, config)
    regions = read_hit_table(out)
    assert regions["event_id"].nunique() == split.events.n_events == report["region_events"]
    # source_event stays the TrackML event number (the trackml_data contract); the
    # sub-event a region came from and the region index have columns of their own.
    assert (regions["source_event"] == 1).all()
    np.testing.assert_array_equal(
        regions["source_event_id"], split.events.extras["source_event_id"]
    )
    assert set(regions["source_event_id"]) == set(range(30))
    np.testing.assert_array_equal(regions["region"], split.events.extras["region"])
    assert set(load_events(out, "trackml").extras) >= {"source_event", "source_event_id", "region"}

    # The report's split share (pair_codes of sub-event and ~1e17 particle ids) matches
    # a direct count.
    track = events.particle_id != 0
    homes = pd.DataFrame(
        {
            "event": events.hit_event_index()[track],
            "particle": events.particle_id[track],
            "home": split.home_region[track],
        }
    )
    in_several = homes.groupby(["event", "particle"])["home"].nunique() > 1
    assert report["particles_split_share"] == pytest.approx(in_several.mean())
    assert 0 < in_several.mean() < 1


def test_pair_codes_do_not_collide_for_large_ids() -> None:
    # Formerly 0 * 2**60 + 16 * ... overflowed int64: (0, 5) and (16, 5) shared code 0.
    codes, n = pair_codes(np.array([0, 16, 0]), np.array([5, 5, 2**60 + 4]))
    assert n == 3 and codes.tolist() == [0, 2, 1]
    rng = np.random.default_rng(0)
    first = rng.integers(0, 40, 5000)
    second = rng.choice(rng.integers(-(2**62), 2**62, 50), 5000)
    codes, n = pair_codes(first, second)
    # Reference: distinct rows, in (first, second) order.
    pairs, expected = np.unique(np.stack([first, second], axis=1), axis=0, return_inverse=True)
    assert n == len(pairs)
    np.testing.assert_array_equal(codes, expected.reshape(-1))
    assert pair_codes(np.array([], dtype=np.int64), np.array([], dtype=np.int64))[1] == 0


def test_merging_parameters_keeps_a_region_holding_a_single_track() -> None:
    from evaluation.clustering import ClusteringConfig

    # One straight track per azimuth sector; the oracle predicts the true parameters.
    events = straight_track_event({1: (1.0, -2.4), 2: (1.2, -0.8), 3: (1.4, 0.8), 4: (1.6, 2.4)})
    normaliser = Normaliser.fit(events)
    oracle = DirectionOracle(normaliser)
    published = ClusteringConfig(4, 2, n_jobs=1, one_track_fallback=False)
    scores = {}
    for merge in dd.MERGE_MODES:
        config = dd.DecompositionConfig.regular(phi_regions=4, overlap=0.1, merge=merge)
        result = ed.reconstruct_by_regions(oracle, events, normaliser, published, config)
        scores[merge] = score_reconstruction(events, result.labels)["trackml_score"]
    # HDBSCAN never returns one cluster, so a one-track region is lost per region...
    assert scores["labels"] == 0.0
    # ...unless a region where it finds none is called one track (the default).
    config = dd.DecompositionConfig.regular(phi_regions=4, overlap=0.1, merge="labels")
    default = ClusteringConfig(4, 2, n_jobs=1)
    result = ed.reconstruct_by_regions(oracle, events, normaliser, default, config)
    assert score_reconstruction(events, result.labels)["trackml_score"] == 1.0
    # Clustering the whole event's merged parameters finds all four tracks either way.
    assert scores["params"] == 1.0
