"""Tests of evaluation.plotting: every figure is written, non-trivial and readable PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.plotting import (
    parameter_label,
    plot_efficiency_vs,
    plot_event_display,
    plot_parameter_heatmaps,
)
from evaluation.scoring import efficiency_vs, misassigned_hits

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
