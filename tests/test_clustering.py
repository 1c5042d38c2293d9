"""Tests of evaluation.clustering: implementations, noise policy, parallelism, grid search."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import pytest

from evaluation.clustering import (
    ClusteringConfig,
    cluster_event,
    cluster_events,
    cluster_events_timed,
    count_non_finite,
    grid_search,
    published_setting,
)
from evaluation.scoring import score_per_event


def blobs(
    sizes: list[int], seed: int, spread: float = 0.01, n_outliers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Tight Gaussian blobs far apart in 3-D, plus isolated outliers.

    Returns (points [n, 3], true blob of each point [n], -1 for outliers). Blob centres
    sit on a lattice with spacing 10 (1000 x the spread), so any sane density clustering
    finds exactly these blobs; outliers sit far away from everything and each other.
    """
    rng = np.random.default_rng(seed)
    centres = 10.0 * rng.permutation(np.array(np.meshgrid(*[np.arange(4)] * 3)).reshape(3, -1).T)
    points = [centres[i] + spread * rng.normal(size=(n, 3)) for i, n in enumerate(sizes)]
    truth = [np.full(n, i) for i, n in enumerate(sizes)]
    if n_outliers:
        # Geometrically growing gaps: no two outliers are denser than the rest.
        points.append(100.0 * 3.0 ** np.arange(n_outliers)[:, None] * np.ones((1, 3)))
        truth.append(np.full(n_outliers, -1))
    order = rng.permutation(sum(sizes) + n_outliers)  # hits arrive in random order
    return np.concatenate(points)[order], np.concatenate(truth)[order]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when labels a and b group the points identically (up to renaming)."""
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return pairs["a"].is_unique and pairs["b"].is_unique


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sklearn_and_hdbscan_give_the_same_partition(seed: int) -> None:
    points, truth = blobs([9, 5, 7, 6, 12, 5], seed, n_outliers=3)
    # Outliers: one group under "unassigned" (all -1), one group each as singletons.
    each_alone = np.where(truth >= 0, truth, -10 - np.arange(len(truth)))
    for noise, expected in (("unassigned", truth), ("singleton", each_alone)):
        labels = {
            impl: cluster_event(points, ClusteringConfig(4, 2, impl, noise))
            for impl in ("hdbscan", "sklearn")
        }
        assert same_partition(labels["hdbscan"], labels["sklearn"])
        assert same_partition(labels["hdbscan"], expected)  # and both found the blobs
        for impl_labels in labels.values():
            if noise == "unassigned":
                # Same label semantics: clusters 0..k-1, outliers exactly -1, nothing else.
                assert set(impl_labels) == {-1, *range(6)}
                assert (impl_labels[truth == -1] == -1).all()
            else:
                assert impl_labels.min() == 0


def overlapping_events(n_events: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Events of 5-11 tracks of 5-9 hits, Gaussian spread 0.08 around centres in [-1, 1]^3.

    Tracks overlap now and then, so the clustering is imperfect (score about 0.9) and the
    HDBSCAN parameters matter. Returns (params [T, 3], offsets [E + 1], truth frame).
    """
    rng = np.random.default_rng(seed)
    params, truth, offsets = [], [], [0]
    for event in range(n_events):
        n_tracks = int(rng.integers(5, 12))
        particle = np.repeat(np.arange(1, n_tracks + 1), rng.integers(5, 10, n_tracks))
        centres = rng.uniform(-1, 1, (n_tracks, 3))
        params.append(centres[particle - 1] + 0.08 * rng.normal(size=(len(particle), 3)))
        offsets.append(offsets[-1] + len(particle))
        truth.append(
            pd.DataFrame(
                {
                    "event_id": event,
                    "hit_id": np.arange(len(particle)),
                    "particle_id": particle,
                    "weight": 1.0,
                }
            )
        )
    return np.concatenate(params), np.array(offsets), pd.concat(truth, ignore_index=True)


@pytest.mark.parametrize(("mcs", "ms"), [(4, 2), (3, 3)])
def test_sklearn_matches_hdbscan_on_overlapping_tracks(mcs: int, ms: int) -> None:
    # scikit-learn's min_samples counts the point itself: without the +1 translation only
    # about 60-80 % of these events come out identical and the mean score moves by 0.02-
    # 0.04. With it, only tie-breaking between equal mutual-reachability distances is left.
    params, offsets, truth = overlapping_events(40, seed=0)
    labels, score = {}, {}
    for impl in ("hdbscan", "sklearn"):
        config = ClusteringConfig(min_cluster_size=mcs, min_samples=ms, implementation=impl)
        labels[impl] = cluster_events(params, offsets, config)
        submission = truth[["event_id", "hit_id"]].assign(track_id=labels[impl])
        score[impl] = score_per_event(truth, submission).mean()
    identical = [
        same_partition(labels["hdbscan"][a:b], labels["sklearn"][a:b])
        for a, b in itertools.pairwise(offsets)
    ]
    assert np.mean(identical) >= 0.9
    assert 0.8 < score["hdbscan"] < 0.98  # a case where clustering choices matter
    assert score["sklearn"] == pytest.approx(score["hdbscan"], abs=0.005)


def test_noise_policy_singletons_or_minus_one() -> None:
    points, truth = blobs([5, 5, 5], seed=3, n_outliers=4)
    config = ClusteringConfig(min_cluster_size=3, min_samples=2, noise="unassigned")
    unassigned = cluster_event(points, config)
    assert (unassigned[truth == -1] == -1).all() and (unassigned[truth >= 0] >= 0).all()
    singleton = cluster_event(points, ClusteringConfig(min_cluster_size=3, min_samples=2))
    # Clusters keep their labels 0, 1, 2; the 4 outliers get 3, 4, 5, 6, one each.
    assert (singleton[truth >= 0] == unassigned[truth >= 0]).all()
    assert sorted(singleton[truth == -1]) == [3, 4, 5, 6]
    assert singleton.min() >= 0


@pytest.mark.parametrize("n_hits", [0, 1, 2, 4])
def test_events_smaller_than_a_cluster_are_all_outliers(n_hits: int) -> None:
    points = np.random.default_rng(0).normal(size=(n_hits, 3))
    for impl in ("hdbscan", "sklearn"):
        config = ClusteringConfig(min_cluster_size=5, min_samples=2, implementation=impl)
        assert cluster_event(points, config).tolist() == list(range(n_hits))
        config = ClusteringConfig(min_cluster_size=5, implementation=impl, noise="unassigned")
        assert cluster_event(points, config).tolist() == [-1] * n_hits


def test_min_samples_larger_than_the_event_agrees() -> None:
    # scikit-learn refuses min_samples > n; we clamp it, and the hdbscan package then
    # marks every point an outlier too.
    points, _ = blobs([3, 3], seed=4)
    for impl in ("hdbscan", "sklearn"):
        config = ClusteringConfig(
            2, 10, implementation=impl, noise="unassigned", one_track_fallback=False
        )
        assert (cluster_event(points, config) == -1).all()


@pytest.mark.parametrize("impl", ["hdbscan", "sklearn"])
def test_an_event_holding_one_track_becomes_one_cluster(impl: str) -> None:
    one_track, _ = blobs([9], seed=2)
    published = ClusteringConfig(4, 2, implementation=impl, one_track_fallback=False)
    # HDBSCAN alone never returns the whole input as one cluster: nine singletons.
    assert sorted(cluster_event(one_track, published).tolist()) == list(range(9))
    retried = ClusteringConfig(4, 2, implementation=impl)
    unassigned = ClusteringConfig(4, 2, implementation=impl, noise="unassigned")
    assert cluster_event(one_track, unassigned).tolist() == [0] * 9
    assert cluster_event(one_track, retried).tolist() == [0] * 9
    # Where HDBSCAN finds clusters, the retry changes nothing.
    two_tracks, truth = blobs([9, 9], seed=2)
    labels = cluster_event(two_tracks, retried)
    assert (labels == cluster_event(two_tracks, published)).all()
    assert len(set(labels.tolist())) == 2
    assert all(len(set(labels[truth == t].tolist())) == 1 for t in (0, 1))


def make_events(
    n_events: int, seed: int, track_sizes: tuple[int, ...] = (3,)
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Events of well-separated blobs: (params [T, 3], offsets [E + 1], truth frame)."""
    rng = np.random.default_rng(seed)
    params, truth, offsets = [], [], [0]
    for event in range(n_events):
        sizes = list(rng.choice(track_sizes, size=int(rng.integers(2, 6))))
        points, blob = blobs(sizes, seed=seed * 1000 + event)
        params.append(points)
        truth.append(
            pd.DataFrame(
                {
                    "event_id": event,
                    "hit_id": np.arange(len(points)),
                    "particle_id": blob + 1,
                    "weight": 1.0,
                }
            )
        )
        offsets.append(offsets[-1] + len(points))
    return np.concatenate(params), np.array(offsets), pd.concat(truth, ignore_index=True)


def test_parallel_serial_and_timed_clustering_agree() -> None:
    params, offsets, _ = make_events(12, seed=5, track_sizes=(4, 5, 6))
    serial = cluster_events(params, offsets, ClusteringConfig(min_cluster_size=3, n_jobs=1))
    parallel = cluster_events(params, offsets, ClusteringConfig(min_cluster_size=3, n_jobs=2))
    timed, seconds = cluster_events_timed(params, offsets, ClusteringConfig(min_cluster_size=3))
    assert np.array_equal(serial, parallel) and np.array_equal(serial, timed)
    assert seconds.shape == (12,) and (seconds > 0).all()
    # Each event is clustered on its own: its labels start again at 0.
    for a, b in itertools.pairwise(offsets):
        assert serial[a:b].min() == 0
    assert cluster_events(params[:0], np.array([0]), ClusteringConfig()).shape == (0,)


def test_grid_search_picks_the_best_pair() -> None:
    # Every track has exactly 3 hits in a tight blob. min_cluster_size 3 finds each blob
    # (score 1). With min_cluster_size >= 4 no single blob is a cluster: a cluster must
    # merge whole blobs (each particle then holds at most 50 % of it: not good) and
    # leftover hits are singletons holding 1/3 of their particle: score exactly 0.
    params, offsets, truth = make_events(8, seed=6)
    table, best = grid_search(params, offsets, truth, [5, 4, 3], [2], ClusteringConfig(n_jobs=2))
    assert best == (3, 2)
    assert table[["min_cluster_size", "min_samples"]].values.tolist() == [[5, 2], [4, 2], [3, 2]]
    assert table["trackml_score"].tolist() == [0.0, 0.0, 1.0]
    assert table.loc[2, "double_majority"] == 1.0 and table.loc[2, "fake_rate"] == 0.0
    # Ties go to the first pair in grid order (min_cluster_size outer, min_samples inner).
    table, best = grid_search(params, offsets, truth, [4, 3, 2], [1, 2])
    assert len(table) == 6 and best == (3, 1)
    assert table["trackml_score"].max() == 1.0
    with pytest.raises(ValueError, match="rows"):
        grid_search(params[:-1], offsets, truth, [3], [2])


def test_non_finite_predictions_are_counted_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params, offsets, truth = make_events(4, seed=7)
    event_id = truth["event_id"].to_numpy()
    with caplog.at_level(logging.WARNING, logger="evaluation.clustering"):
        assert count_non_finite(params, event_id) == 0
    assert not caplog.records
    # NaN in one coordinate of 2 hits of the third event, inf in one hit of the second.
    bad = params.copy()
    third, second = offsets[2], offsets[1]
    bad[[third, third + 1], 1] = np.nan
    bad[second + 2, 0] = np.inf
    with caplog.at_level(logging.WARNING, logger="evaluation.clustering"):
        assert count_non_finite(bad, event_id, "validation hits") == 3
    (record,) = caplog.records  # one warning for the whole set, not one per hit or event
    ids = pd.unique(event_id[[second, third]])
    assert (
        f"3 of {len(params)} validation hits (in 2 events, first event_id {ids[0]}, {ids[1]})"
        in (record.getMessage())
    )
    # Clustering keeps going: those hits become outliers, i.e. singletons by default.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evaluation.clustering"):
        grid_search(bad, offsets, truth, [3], [2])
    assert len(caplog.records) == 1 and "3 of" in caplog.records[0].getMessage()
    labels = cluster_events(bad, offsets, ClusteringConfig(min_cluster_size=3))
    for row, event in ((third, 2), (third + 1, 2), (second + 2, 1)):
        assert (labels[offsets[event] : offsets[event + 1]] == labels[row]).sum() == 1
    with pytest.raises(ValueError, match="event_id has"):
        count_non_finite(params, event_id[:-1])


def test_config_validation_and_published_settings() -> None:
    assert published_setting("trackml", "50-100") == (5, 3)
    assert published_setting("helical", "1-20") == (5, 2)
    assert published_setting("linear", "7") is None
    with pytest.raises(ValueError, match="implementation"):
        ClusteringConfig(implementation="dbscan")
    with pytest.raises(ValueError, match="noise"):
        ClusteringConfig(noise="drop")
    with pytest.raises(ValueError, match="min_cluster_size"):
        ClusteringConfig(min_cluster_size=1)


def test_allow_single_cluster_keeps_a_lone_track_whole() -> None:
    """One tight blob: HDBSCAN's default refuses a single cluster; the option allows it."""
    points = np.random.default_rng(0).normal(0.0, 0.01, size=(12, 3))
    for implementation in ("hdbscan", "sklearn"):
        split = cluster_event(
            points,
            ClusteringConfig(min_cluster_size=3, min_samples=2, implementation=implementation),
        )
        whole = cluster_event(
            points,
            ClusteringConfig(
                min_cluster_size=3,
                min_samples=2,
                implementation=implementation,
                allow_single_cluster=True,
            ),
        )
        # Without the option the blob is cut in two clusters (plus outliers); with it the
        # core of the blob is one cluster holding both of those parts.
        assert (np.bincount(split) >= 3).sum() == 2
        assert (np.bincount(whole) >= 3).sum() == 1
        assert np.bincount(whole).max() == (np.bincount(split)[np.bincount(split) >= 3]).sum()
