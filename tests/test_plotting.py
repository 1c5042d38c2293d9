"""Tests of evaluation.plotting: every figure is written, non-trivial and readable PNG;
binomial intervals, discrete-parameter tables, track colours and titles are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.efficiencies import efficiency_vs
from evaluation.plotting import (
    ONE_SIGMA,
    TRACK_COLOURS,
    UNASSIGNED_COLOUR,
    binomial_interval,
    confusion_counts,
    discrete_levels,
    figure_title,
    nearest_level,
    parameter_label,
    plot_efficiency_vs,
    plot_event_display,
    plot_parameter_heatmaps,
    track_colours,
)
from evaluation.scoring import misassigned_hits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_BYTES = 10_000  # an empty axes frame is a few KB; real content is far more


def assert_png(path: Path) -> None:
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > MIN_BYTES, (path, len(data))


def test_heatmaps_one_file_per_parameter_and_an_overview(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ("theta", "sin_phi", "q")
    true = np.column_stack(
        [rng.uniform(0.1, 3.0, 2000), rng.uniform(-1, 1, 2000), rng.choice([-1.0, 1.0], 2000)]
    )
    predicted = true + rng.normal(0, [0.05, 0.1, 0.3], size=true.shape)
    paths = plot_parameter_heatmaps(predicted, true, names, tmp_path / "figs", title="test")
    assert [p.name for p in paths] == [
        "heatmap_theta.png",
        "heatmap_sin_phi.png",
        "heatmap_q.png",
        "heatmaps.png",
    ]
    for path in paths:
        assert_png(path)
    assert parameter_label("theta") == "θ, polar angle [rad]"
    assert parameter_label("unknown_column") == "unknown_column"
    with pytest.raises(ValueError, match="shape"):
        plot_parameter_heatmaps(predicted[:, :2], true, names, tmp_path)
    with pytest.raises(ValueError, match="no hits"):
        plot_parameter_heatmaps(predicted[:0], true[:0], names, tmp_path)


def test_event_display_marks_misassigned_hits(tmp_path: Path) -> None:
    # Three straight tracks of 9 hits from the origin, two hits given to the wrong track
    # and two noise hits left alone.
    rng = np.random.default_rng(1)
    radius = np.tile(np.linspace(0.05, 0.5, 9), 3)
    phi = np.repeat([0.3, 2.0, -1.5], 9)
    z = radius * np.repeat([0.5, -1.0, 2.0], 9)
    xyz = np.column_stack([radius * np.cos(phi), radius * np.sin(phi), z])
    xyz = np.vstack([xyz, rng.uniform(-0.5, 0.5, size=(2, 3))])
    particle_id = np.concatenate([np.repeat([1, 2, 3], 9), [0, 0]])
    labels = np.concatenate([np.repeat([0, 1, 2], 9), [3, 4]])
    labels[[4, 13]] = labels[[13, 4]]  # swap one hit between tracks 0 and 1
    misassigned = misassigned_hits(particle_id, labels)
    assert misassigned.sum() == 2
    path = plot_event_display(
        xyz, particle_id, labels, misassigned, tmp_path / "display.png", "m", "event 0:"
    )
    assert_png(path)
    with pytest.raises(ValueError, match="xyz"):
        plot_event_display(xyz[:, :2], particle_id, labels, misassigned, tmp_path / "x.png")


def test_efficiency_plot(tmp_path: Path) -> None:
    import pandas as pd

    truth = pd.DataFrame(
        {
            "hit_id": np.arange(12),
            "particle_id": np.repeat([1, 2, 3, 4], 3),
            "pt": np.repeat([0.4, 0.8, 1.2, 5.0], 3),
            "eta": np.repeat([-1.0, 0.2, 0.7, 2.5], 3),
        }
    )
    submission = pd.DataFrame({"hit_id": np.arange(12), "track_id": [1, 1, 1, 2, 2, 9] + [3] * 6})
    table = efficiency_vs(truth, submission, None, "pt")
    assert_png(plot_efficiency_vs(table, "pt", tmp_path / "eff_pt.png", title="t"))
    table = efficiency_vs(truth, submission, None, "eta")
    assert_png(plot_efficiency_vs(table, "eta", tmp_path / "eff_eta.png"))


def test_clopper_pearson_interval_hand_values_and_definition() -> None:
    from scipy.stats import binom

    tail = 0.5 * (1 - ONE_SIGMA)
    # k = 0 and k = n have closed forms: the bound where the one outcome seen has
    # probability alpha / 2. Never a zero-length bar at efficiency 0 or 1.
    low, high = binomial_interval(np.array([0, 10]), np.array([10, 10]))
    assert low[0] == 0.0 and high[0] == pytest.approx(1 - tail**0.1, abs=1e-12)
    assert high[0] == pytest.approx(0.16815, abs=1e-5)
    assert high[1] == 1.0 and low[1] == pytest.approx(tail**0.1, abs=1e-12)
    # A textbook value: 95 % interval of 5 successes in 10 trials is [0.1871, 0.8129].
    low, high = binomial_interval(np.array([5]), np.array([10]), confidence=0.95)
    assert low[0] == pytest.approx(0.18709, abs=1e-4) and high[0] == pytest.approx(
        0.81291, abs=1e-4
    )
    # The definition, checked with the binomial distribution (not the beta function used
    # to compute the bounds): P(X >= k | low) = P(X <= k | high) = alpha / 2.
    k = np.array([1, 3, 17, 99, 250])
    n = np.array([2, 40, 20, 100, 1000])
    low, high = binomial_interval(k, n)
    np.testing.assert_allclose(binom.sf(k - 1, n, low), tail, rtol=1e-6)
    np.testing.assert_allclose(binom.cdf(k, n, high), tail, rtol=1e-6)
    assert np.all((low < k / n) & (k / n < high))
    # The normal approximation it replaces is close for large n and p near 1/2; the exact
    # interval is the wider (conservative) by about 1/n.
    normal_width = 2 * np.sqrt(0.25 * 0.75 / 1000)
    assert normal_width < high[-1] - low[-1] < normal_width + 2 / 1000
    low, high = binomial_interval(np.array([0]), np.array([0]))
    assert np.isnan(low[0]) and np.isnan(high[0])
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_interval(np.array([3]), np.array([2]))


def test_discrete_parameters_are_detected_and_counted() -> None:
    rng = np.random.default_rng(2)
    charge = rng.choice([-1.0, 1.0], 500)
    np.testing.assert_array_equal(discrete_levels(charge), [-1.0, 1.0])
    np.testing.assert_array_equal(discrete_levels(np.r_[charge, np.nan]), [-1.0, 1.0])
    assert discrete_levels(rng.uniform(-1, 1, 500)) is None
    assert discrete_levels(np.array([0.1, 0.5, 2.0])) is None  # few, but none repeated
    assert discrete_levels(np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], 10)) is None  # 5 levels
    levels = np.array([-1.0, 1.0])
    np.testing.assert_array_equal(
        nearest_level(np.array([-3.0, -0.2, 0.1, 0.9, np.nan]), levels), [0, 0, 1, 1, -1]
    )
    true = np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    predicted = np.array([-0.99, -1.02, 0.3, 0.995, -0.1, np.inf * 0, 1.01])
    np.testing.assert_array_equal(confusion_counts(true, predicted, levels), [[2, 1, 0], [1, 2, 1]])


def test_track_colours_never_grey_nor_red_and_neighbours_differ() -> None:
    palette = np.asarray(TRACK_COLOURS)[:, :3]
    assert len(palette) == 16 and len(np.unique(palette, axis=0)) == 16
    grey = np.asarray(UNASSIGNED_COLOUR)[:3]
    assert np.all(palette.max(axis=1) - palette.min(axis=1) > 0.1)  # no grey at all
    assert np.all(np.abs(palette - grey).max(axis=1) > 0.1)
    red = np.array([0.839, 0.153, 0.157])  # tab:red, the misassigned-hit marker
    assert np.all(np.abs(palette - red).max(axis=1) > 0.1)
    # 40 tracks of 3 hits, 5 singletons and 5 unassigned hits.
    labels = np.concatenate([np.repeat(np.arange(40), 3), np.arange(100, 105), -np.ones(5, int)])
    colours = track_colours(labels)
    assert colours.shape == (len(labels), 4)
    np.testing.assert_array_equal(colours[120:], np.tile(UNASSIGNED_COLOUR, (10, 1)))
    per_track = colours[:120:3]
    assert not np.any(np.all(per_track[1:] == per_track[:-1], axis=1))
    assert not np.any(np.all(colours[:120] == UNASSIGNED_COLOUR, axis=1))


def test_titles_are_wrapped_never_cut() -> None:
    command = "python evaluation/test.py --model_name " + "/very/long/path" * 12 + "/m.pt"
    what = "predicted vs true track parameters (12,345 hits)"
    title = figure_title(command, what, width=60)
    assert title.replace("\n", " ") == f"{command}: {what}"
    assert all(len(line) <= 60 or " " not in line for line in title.splitlines())
    assert figure_title("", what) == what


def test_discrete_parameter_figure_and_efficiency_at_the_edges(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    true = np.column_stack([rng.uniform(0.25, 2, 3000), rng.choice([-1.0, 1.0], 3000)])
    predicted = true + np.column_stack([rng.normal(0, 0.02, 3000), -0.005 * true[:, 1]])
    paths = plot_parameter_heatmaps(predicted, true, ("radial_coeff", "azimuthal_coeff"), tmp_path)
    for path in paths:
        assert_png(path)
    table = pd.DataFrame(
        {
            "low": [0.0, 1.0, 2.0],
            "high": [1.0, 2.0, 3.0],
            "n_particles": [20, 15, 0],
            "n_perfect": [0, 15, 0],
            "n_double_majority": [20, 15, 0],
            "perfect": [0.0, 1.0, np.nan],
            "double_majority": [1.0, 1.0, np.nan],
        }
    )
    assert_png(plot_efficiency_vs(table, "pt", tmp_path / "edges.png"))
