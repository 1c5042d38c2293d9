"""Figures of an evaluation: parameter heatmaps, residuals, event display, efficiencies.

Every function takes plain arrays (no model, no EventSet), writes one PNG and returns
its path. Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot: no
global figure state, no GUI backend, safe in worker processes and on headless nodes.

Parameter values are in physical units (denormalise predictions with the checkpoint's
``Normaliser`` first); ``PARAMETER_LABELS`` gives each target column its axis label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

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
LENGTH_UNITS = {"linear": "m", "helical": "m", "trackml": "mm"}

_DPI = 120
# Colours cycled over predicted tracks in the event display (qualitative, 20 colours).
_TRACK_CMAP = "tab20"


def parameter_label(name: str) -> str:
    """Axis label of a target column (the column name itself when unknown)."""
    return PARAMETER_LABELS.get(name, name)


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
        the diagonal, next to the residual histogram), then ``heatmaps.png`` (all
        parameters: heatmaps on top, residuals below).
    """
    predicted, true = _check_parameters(predicted, true, names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        fig = Figure(figsize=(11.5, 4.8), layout="constrained")
        heat_ax, residual_ax = fig.subplots(1, 2)
        _heatmap_panel(heat_ax, true[:, k], predicted[:, k], name, bins)
        _residual_panel(residual_ax, true[:, k], predicted[:, k], name, bins)
        fig.suptitle(f"{title}: {name}" if title else name)
        path = out_dir / f"heatmap_{name}.png"
        fig.savefig(path, dpi=_DPI)
        paths.append(path)
    n = len(names)
    fig = Figure(figsize=(4.6 * n, 8.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for k, name in enumerate(names):
        _heatmap_panel(axes[0, k], true[:, k], predicted[:, k], name, bins)
        _residual_panel(axes[1, k], true[:, k], predicted[:, k], name, bins)
    what = f"predicted vs true track parameters ({len(true):,} hits)"
    fig.suptitle(f"{title}: {what}" if title else what)
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
        ``path``. Tracks of >= 2 hits get one of 20 cycled colours (nearby tracks may
        share one); unassigned hits and singletons are small grey dots.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    labels = np.asarray(labels)
    misassigned = np.asarray(misassigned, dtype=bool)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not len(xyz) == len(labels) == len(misassigned):
        raise ValueError("need xyz [n, 3] and labels, misassigned [n]")
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    _, code, size = np.unique(labels, return_inverse=True, return_counts=True)
    in_track = (size[code] > 1) & (labels >= 0)
    # tab20 holds 10 hues in dark/light pairs: the first 10 tracks get the 10 dark hues,
    # the next 10 the light ones, so neighbouring labels never share a hue.
    colour = (code % 10) * 2 + (code // 10) % 2
    n_tracks = len(np.unique(labels[in_track]))
    n_particles = len(np.unique(particle_id[particle_id > 0]))
    point_size = float(np.clip(3000.0 / max(len(xyz), 1), 4.0, 30.0))
    fig = Figure(figsize=(13, 6), layout="constrained")
    axes = fig.subplots(1, 2)
    views = ((xyz[:, 0], xyz[:, 1], "x", "y"), (xyz[:, 2], r, "z", "r"))
    for ax, (u, v, u_name, v_name) in zip(axes, views, strict=True):
        ax.scatter(
            u[~in_track], v[~in_track], s=point_size * 0.6, c="0.7", label="unassigned / singleton"
        )
        ax.scatter(
            u[in_track],
            v[in_track],
            s=point_size,
            c=colour[in_track],
            cmap=_TRACK_CMAP,
            vmin=0,
            vmax=19,
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
    fig.suptitle(f"{title} {what}" if title else what)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def plot_efficiency_vs(
    table: pd.DataFrame, variable: str, path: str | Path, title: str = ""
) -> Path:
    """Perfect and double-majority efficiency per bin of pT or eta.

    Args:
        table: ``evaluation.scoring.efficiency_vs`` output (low, high, n_particles,
            perfect, double_majority).
        variable: "pt" (GeV) or "eta".
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``. Error bars are binomial, sqrt(e (1 - e) / n); bins with an infinite edge
        or no particles are not drawn.
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
        error = np.sqrt(np.clip(value * (1 - value), 0, None) / n)
        ax.errorbar(
            centre,
            value,
            xerr=half,
            yerr=error,
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
    what = f"efficiency vs {'pT' if variable == 'pt' else 'η'} ({int(n.sum())} particles)"
    ax.set_title(f"{title}: {what}" if title else what)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path
