"""Figures of an evaluation: parameter heatmaps, residuals, event display, efficiencies.

Every function takes plain arrays (no model, no EventSet), writes one PNG and returns
its path. Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot: no
global figure state, no GUI backend, safe in worker processes and on headless nodes.

Parameter values are in physical units (denormalise predictions with the checkpoint's
``Normaliser`` first); ``PARAMETER_LABELS`` gives each target column its axis label.
A parameter that takes only a few values (charge q, turning direction d = +-1) is
*discrete*: it is drawn as a confusion table and per-class histograms of the prediction,
never as a 2-D heatmap or a pooled residual (whose classes would sit side by side as two
false modes). Efficiency error bars are Clopper-Pearson binomial intervals.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from data_processing.data_types import REGISTRY

#: Axis label (symbol, meaning, unit) of every target column of dataset.py. REDVID
#: lengths are metres in our simulator (and t is a length: r = a t), TrackML's mm.
PARAMETER_LABELS: dict[str, str] = {
    "theta": "θ, polar angle [rad]",
    "sin_phi": "sin φ (azimuth)",
    "cos_phi": "cos φ (azimuth)",
    "q": "q, charge [e]",
    "radial_coeff": "a, radial coeff. (r = a t)",
    "pitch_coeff": "b, pitch coeff. (z = b t)",
    "azimuthal_coeff": "d, azimuthal coeff. [rad/m]",
    "sin_phi0": "sin φ₀",
    "cos_phi0": "cos φ₀",
}

#: Length unit of the hit coordinates per data type.
LENGTH_UNITS = {name: kind.length_unit for name, kind in REGISTRY.items()}

_DPI = 120
#: A column taking at most this many distinct values (some repeated) is discrete.
DISCRETE_MAX_LEVELS = 4
#: One standard deviation of a Gaussian: the coverage of the efficiency error bars.
ONE_SIGMA = 0.682689492137086
#: Colour of unassigned hits and singletons in the event display.
UNASSIGNED_COLOUR = to_rgba("0.7")
# tab20 holds 10 hues in dark/light pairs. Its grey pair would look like unassigned hits
# and its red pair like the misassigned-hit markers, so both are left out: 8 dark hues
# first, then their 8 light partners, so neighbouring labels never share a hue.
_TAB20 = colormaps["tab20"]
_HUES = (0, 1, 2, 4, 5, 6, 8, 9)  # tab20 pairs: blue orange green purple brown pink olive cyan
#: Colours cycled over predicted tracks (RGBA), none grey and none red.
TRACK_COLOURS: tuple[tuple[float, float, float, float], ...] = tuple(
    _TAB20(2 * hue + light) for light in (0, 1) for hue in _HUES
)


def parameter_label(name: str) -> str:
    """Axis label of a target column (the column name itself when unknown)."""
    return PARAMETER_LABELS.get(name, name)


def figure_title(title: str, what: str, width: int = 110) -> str:
    """``title: what`` wrapped onto lines of at most ``width`` characters, never cut short.

    A word longer than ``width`` (a long path) gets a line of its own, whole.
    """
    text = f"{title}: {what}" if title else what
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) or text


def discrete_levels(values: np.ndarray, max_levels: int = DISCRETE_MAX_LEVELS) -> np.ndarray | None:
    """The sorted distinct values of a discrete column, or None for a continuous one.

    Discrete: at most ``max_levels`` distinct finite values, at least one of them repeated
    (so a handful of continuous values is not mistaken for classes). Non-finite entries
    are ignored.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    levels = np.unique(values)
    if len(levels) == 0 or len(levels) > max_levels or len(levels) == len(values):
        return None
    return levels


def nearest_level(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index into ``levels`` (sorted) of the level nearest each value; -1 for non-finite."""
    values = np.asarray(values, dtype=np.float64)
    midpoints = 0.5 * (levels[1:] + levels[:-1])
    index = np.searchsorted(midpoints, values)
    return np.where(np.isfinite(values), index, -1)


def binomial_interval(
    k: np.ndarray, n: np.ndarray, confidence: float = ONE_SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson (exact) interval of a binomial proportion, k successes of n.

    Args:
        k: [B] successes; n: [B] trials (an entry with n = 0 gives NaN bounds).
        confidence: central coverage, default one Gaussian sigma (68.27 %).

    Returns:
        (low, high), each [B]: the proportions p where P(X >= k | p) and P(X <= k | p)
        equal (1 - confidence) / 2. low = 0 at k = 0 and high = 1 at k = n, but the
        interval never collapses to a point: at k = 0 it reaches 1 - (alpha/2)^(1/n).
    """
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n")
    tail = 0.5 * (1.0 - confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1.0 - tail, k + 1, n - k), 1.0)
    empty = n <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def track_colours(labels: np.ndarray) -> np.ndarray:
    """RGBA colour [n, 4] of every hit of an event display, from its predicted label.

    Hits of a predicted track of >= 2 hits cycle through ``TRACK_COLOURS`` in label
    order; unassigned hits (label < 0) and singletons get ``UNASSIGNED_COLOUR``.
    """
    labels = np.asarray(labels).ravel()
    in_track = _in_track(labels)
    _, track_rank = np.unique(labels[in_track], return_inverse=True)
    palette = np.asarray(TRACK_COLOURS)
    colours = np.tile(np.asarray(UNASSIGNED_COLOUR), (len(labels), 1))
    colours[in_track] = palette[track_rank.ravel() % len(palette)]
    return colours


def _in_track(labels: np.ndarray) -> np.ndarray:
    """[n] bool: the hit's label is >= 0 and shared with another hit."""
    _, code, size = np.unique(labels, return_inverse=True, return_counts=True)
    return (size[code.ravel()] > 1) & (labels >= 0)


def _common_range(*values: np.ndarray) -> tuple[float, float]:
    """A shared axis range holding 99.8 % of the values (outliers would squash the rest)."""
    joined = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])
    joined = joined[np.isfinite(joined)]
    if len(joined) == 0:
        return -1.0, 1.0
    low, high = np.percentile(joined, [0.1, 99.9])
    if high - low < 1e-9:  # a constant column (e.g. all q = +1)
        low, high = low - 0.5, high + 0.5
    pad = 0.02 * (high - low)
    return float(low - pad), float(high + pad)


def _heatmap_panel(ax, true: np.ndarray, predicted: np.ndarray, name: str, bins: int) -> None:
    """2-D histogram of predicted vs true values of one parameter, with the diagonal."""
    low, high = _common_range(true, predicted)
    counts, x_edges, y_edges = np.histogram2d(
        true, predicted, bins=bins, range=[[low, high], [low, high]]
    )
    counts = np.ma.masked_equal(counts, 0)  # empty bins stay white under a log scale
    mesh = ax.pcolormesh(
        x_edges,
        y_edges,
        counts.T,
        norm=LogNorm(vmin=1, vmax=max(1.0, float(counts.max() or 1))),
        cmap="viridis",
    )
    ax.plot([low, high], [low, high], color="red", lw=1.0, ls="--", label="predicted = true")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    label = parameter_label(name)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(name)
    ax.legend(loc="upper left", fontsize="small")
    colorbar = ax.figure.colorbar(mesh, ax=ax, label="hits per bin", fraction=0.046, pad=0.04)
    # Plain numbers (1, 2, 5, 10, ...) rather than 10^0-style labels on the log axis.
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    colorbar.ax.yaxis.set_major_formatter(plain)
    colorbar.ax.yaxis.set_minor_formatter(plain if counts.max() < 20 else NullFormatter())


def _residual_panel(ax, true: np.ndarray, predicted: np.ndarray, name: str, bins: int) -> None:
    """Histogram of predicted - true for one parameter, with mean, std and RMS."""
    residual = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    finite = residual[np.isfinite(residual)]
    extent = float(np.percentile(np.abs(finite), 99.5)) if len(finite) else 1.0
    extent = extent if extent > 0 else 1.0
    ax.hist(finite, bins=bins, range=(-extent, extent), color="tab:blue", histtype="stepfilled")
    ax.axvline(0.0, color="red", lw=1.0, ls="--")
    mean = float(finite.mean()) if len(finite) else float("nan")
    std = float(finite.std()) if len(finite) else float("nan")
    rms = float(np.sqrt((finite**2).mean())) if len(finite) else float("nan")
    ax.text(
        0.97,
        0.95,
        f"mean {mean:.3g}\nstd {std:.3g}\nRMS {rms:.3g}\n{len(finite):,} hits",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize="small",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
    )
    ax.set_xlabel(f"predicted − true: {parameter_label(name)}")
    ax.set_ylabel("hits")
    ax.set_title(f"{name} residual")


def _level_text(value: float) -> str:
    return f"{value:+g}" if value != 0 else "0"


def confusion_counts(true: np.ndarray, predicted: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Hits per (true level, level nearest the prediction) of a discrete parameter.

    Args:
        true: [N] true values (each one of ``levels``); predicted: [N] predictions.
        levels: [L] sorted levels (``discrete_levels``).

    Returns:
        [L, L + 1] int64 counts; row i: hits whose true value is levels[i]; column j < L:
        the prediction is nearest levels[j]; column L: the prediction is not finite.
    """
    true_class = nearest_level(true, levels)
    predicted_class = nearest_level(predicted, levels)
    n = len(levels)
    counts = np.zeros((n, n + 1), dtype=np.int64)
    finite = predicted_class >= 0
    np.add.at(counts, (true_class[finite], predicted_class[finite]), 1)
    np.add.at(counts[:, n], true_class[~finite], 1)
    return counts


def _confusion_panel(ax, true: np.ndarray, predicted: np.ndarray, name: str, levels) -> None:
    """Confusion table of a discrete parameter: true level vs the level nearest the
    prediction, counts and row shares as text (no colour scale)."""
    n = len(levels)
    counts = confusion_counts(true, predicted, levels)
    shown = counts if counts[:, n].any() else counts[:, :n]
    rows = shown.sum(axis=1, keepdims=True)
    share = np.divide(shown, rows, out=np.zeros(shown.shape), where=rows > 0)
    cells = [
        [f"{c:,}\n{100 * f:.4g} %" for c, f in zip(r, q, strict=True)]
        for r, q in zip(shown, share, strict=True)
    ]
    columns = [f"pred. {_level_text(v)}" for v in levels] + (
        ["non-finite"] if shown.shape[1] > n else []
    )
    table = ax.table(
        cellText=cells,
        rowLabels=[f"true {_level_text(v)}" for v in levels],
        colLabels=columns,
        loc="center",
        cellLoc="center",
    )
    table.scale(1.0, 3.0)
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (row, column), cell in table.get_celld().items():
        if row > 0 and 0 <= column < n and column == row - 1:  # the diagonal: right
            cell.set_facecolor("#d9f0d3")
    wrong = int(shown.sum() - np.trace(shown[:, :n]))
    ax.set_axis_off()
    ax.set_title(
        f"{name}: true vs nearest level\n{wrong:,} of {int(shown.sum()):,} hits off "
        f"({100 * wrong / max(int(shown.sum()), 1):.3g} %)"
    )


def _class_histogram_panel(ax, true: np.ndarray, predicted: np.ndarray, name: str, levels) -> None:
    """Histograms of prediction - true level, one per true level of a discrete parameter,
    with each class's mean and median offset (a pooled residual would mix classes whose
    offsets differ in sign, e.g. both levels of d = +-1 pulled towards 0)."""
    true_class = nearest_level(true, levels)
    offset = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    finite = np.isfinite(offset)
    extent = float(np.percentile(np.abs(offset[finite]), 99.0)) if finite.any() else 1.0
    extent = extent if extent > 0 else 1.0
    notes = []
    for index, level in enumerate(levels):
        chosen = offset[finite & (true_class == index)]
        if len(chosen) == 0:
            continue
        label = f"true {_level_text(level)} ({len(chosen):,} hits)"
        ax.hist(chosen, bins=100, range=(-extent, extent), histtype="step", lw=1.5, label=label)
        notes.append(
            f"{_level_text(level)}: mean {chosen.mean():+.2g}, median {np.median(chosen):+.2g}"
        )
    ax.axvline(0.0, color="red", lw=1.0, ls="--")
    ax.set_xlabel(f"predicted − true: {parameter_label(name)}")
    ax.set_ylabel("hits")
    ax.set_title(f"{name}: residual per true value")
    ax.legend(loc="upper left", fontsize="small")
    ax.text(
        0.03,
        0.80,
        "\n".join(notes),
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize="small",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
    )


def _parameter_panels(
    upper, lower, true: np.ndarray, predicted: np.ndarray, name: str, bins: int
) -> None:
    """Heatmap and residual of a continuous parameter, confusion table and per-class
    histograms of a discrete one (levels found in ``true``)."""
    levels = discrete_levels(true)
    if levels is None:
        _heatmap_panel(upper, true, predicted, name, bins)
        _residual_panel(lower, true, predicted, name, bins)
    else:
        _confusion_panel(upper, true, predicted, name, levels)
        _class_histogram_panel(lower, true, predicted, name, levels)


def _check_parameters(
    predicted: np.ndarray, true: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 2 or predicted.shape[1] != len(names):
        raise ValueError(
            f"need predicted and true of shape [N, {len(names)}], got {predicted.shape} "
            f"and {true.shape}"
        )
    if len(predicted) == 0:
        raise ValueError("no hits to plot")
    return predicted, true


def plot_parameter_heatmaps(
    predicted: np.ndarray,
    true: np.ndarray,
    names: Sequence[str],
    out_dir: str | Path,
    bins: int = 100,
    title: str = "",
) -> list[Path]:
    """Predicted vs true heatmaps and residual histograms, per parameter and overall.

    Args:
        predicted: [N, K] predicted parameters of track hits, physical units.
        true: [N, K] true parameters of the same hits (noise hits left out: no target).
        names: K target column names (``EventSet.target_names``).
        out_dir: folder to write into (created).
        bins: histogram bins per axis.
        title: figure title prefix (e.g. the checkpoint and data set).

    Returns:
        The written paths: ``heatmap_<name>.png`` for each parameter (2-D histogram with
        the diagonal, next to the residual histogram; for a discrete parameter, see
        ``discrete_levels``, a confusion table next to per-class histograms of the
        prediction), then ``heatmaps.png`` (all parameters: heatmaps or tables on top,
        residuals or per-class histograms below).
    """
    predicted, true = _check_parameters(predicted, true, names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        fig = Figure(figsize=(11.5, 4.8), layout="constrained")
        heat_ax, residual_ax = fig.subplots(1, 2)
        _parameter_panels(heat_ax, residual_ax, true[:, k], predicted[:, k], name, bins)
        fig.suptitle(figure_title(title, name))
        path = out_dir / f"heatmap_{name}.png"
        fig.savefig(path, dpi=_DPI)
        paths.append(path)
    n = len(names)
    fig = Figure(figsize=(4.6 * n, 8.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for k, name in enumerate(names):
        _parameter_panels(axes[0, k], axes[1, k], true[:, k], predicted[:, k], name, bins)
    what = f"predicted vs true track parameters ({len(true):,} hits)"
    fig.suptitle(figure_title(title, what, width=int(25 * n)))
    path = out_dir / "heatmaps.png"
    fig.savefig(path, dpi=_DPI)
    paths.append(path)
    return paths


def plot_event_display(
    xyz: np.ndarray,
    particle_id: np.ndarray,
    labels: np.ndarray,
    misassigned: np.ndarray,
    path: str | Path,
    length_unit: str = "m",
    title: str = "",
) -> Path:
    """One event's hits in (x, y) and (z, r), coloured by predicted track.

    Args:
        xyz: [n, 3] hit positions (x, y, z) in ``length_unit``.
        particle_id: [n] true particle (0 = noise), for the caption counts.
        labels: [n] predicted track labels (singletons / -1 = unassigned).
        misassigned: [n] bool (``evaluation.scoring.misassigned_hits``): drawn as red x.
        path: PNG file to write.
        length_unit: axis unit of the coordinates.
        title: figure title.

    Returns:
        ``path``. Tracks of >= 2 hits get one of the 16 cycled ``TRACK_COLOURS`` (none
        grey, none red; tracks 16 labels apart share one); unassigned hits and
        singletons are small grey dots.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    labels = np.asarray(labels)
    misassigned = np.asarray(misassigned, dtype=bool)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not len(xyz) == len(labels) == len(misassigned):
        raise ValueError("need xyz [n, 3] and labels, misassigned [n]")
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    in_track = _in_track(labels)
    colour = track_colours(labels)
    n_tracks = len(np.unique(labels[in_track]))
    n_particles = len(np.unique(particle_id[particle_id > 0]))
    point_size = float(np.clip(3000.0 / max(len(xyz), 1), 4.0, 30.0))
    fig = Figure(figsize=(13, 6), layout="constrained")
    axes = fig.subplots(1, 2)
    views = ((xyz[:, 0], xyz[:, 1], "x", "y"), (xyz[:, 2], r, "z", "r"))
    for ax, (u, v, u_name, v_name) in zip(axes, views, strict=True):
        ax.scatter(
            u[~in_track],
            v[~in_track],
            s=point_size * 0.6,
            color=UNASSIGNED_COLOUR,
            label="unassigned / singleton",
        )
        ax.scatter(
            u[in_track],
            v[in_track],
            s=point_size,
            c=colour[in_track],
            label="hit (colour = predicted track)",
        )
        ax.scatter(
            u[misassigned],
            v[misassigned],
            s=point_size * 2.5,
            marker="x",
            c="red",
            linewidths=1.0,
            label=f"misassigned hit ({int(misassigned.sum())})",
        )
        ax.set_xlabel(f"{u_name} [{length_unit}]")
        ax.set_ylabel(f"{v_name} [{length_unit}]")
        ax.grid(alpha=0.3)
    # Equal scales in (x, y) without shrinking the panel: the data limits grow instead.
    axes[0].set_aspect("equal", adjustable="datalim")
    axes[0].set_title("transverse view (x, y)")
    axes[1].set_title("longitudinal view (z, r)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=3, markerscale=1.5)
    what = f"{len(xyz):,} hits, {n_particles} particles, {n_tracks} predicted tracks of >= 2 hits"
    fig.suptitle(figure_title(title.rstrip(":"), what))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def plot_efficiency_vs(
    table: pd.DataFrame, variable: str, path: str | Path, title: str = ""
) -> Path:
    """Perfect and double-majority efficiency per bin of pT or eta.

    Args:
        table: ``evaluation.efficiencies.efficiency_vs`` output (low, high, n_particles,
            perfect, double_majority).
        variable: "pt" (GeV) or "eta".
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``. Error bars are 68.27 % Clopper-Pearson intervals of the binomial
        proportion (``binomial_interval``): asymmetric, inside [0, 1] and never zero
        at an efficiency of 0 or 1. Bins with an infinite edge or no particles are not
        drawn.
    """
    finite = np.isfinite(table["low"]) & np.isfinite(table["high"]) & (table["n_particles"] > 0)
    shown = table[finite]
    centre = 0.5 * (shown["low"] + shown["high"]).to_numpy()
    half = 0.5 * (shown["high"] - shown["low"]).to_numpy()
    n = shown["n_particles"].to_numpy(dtype=np.float64)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    # Filled circles for DM, open squares for perfect: visible where the two coincide.
    for column, marker, fill, name in (
        ("double_majority", "o", None, "double majority"),
        ("perfect", "s", "none", "perfect"),
    ):
        value = shown[column].to_numpy(dtype=np.float64)
        count_column = f"n_{column}"
        if count_column in shown:
            passed = shown[count_column].to_numpy(dtype=np.float64)
        else:  # tables without counts: recover them from the rates
            passed = np.round(value * n)
        low, high = binomial_interval(passed, n)
        ax.errorbar(
            centre,
            value,
            xerr=half,
            yerr=np.vstack([value - low, high - value]),
            marker=marker,
            markersize=8,
            markerfacecolor=fill,
            ls="none",
            capsize=2,
            label=name,
        )
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("particle pT [GeV]" if variable == "pt" else "particle η (momentum)")
    ax.set_ylabel("efficiency")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    what = (
        f"efficiency vs {'pT' if variable == 'pt' else 'η'} ({int(n.sum())} particles; "
        "68 % Clopper-Pearson intervals)"
    )
    ax.set_title(figure_title(title, what, width=70))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path
