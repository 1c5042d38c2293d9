"""Tracking efficiencies of a hit -> track assignment: perfect, double majority, LHC.

Input tables as in :mod:`evaluation.scoring` (``truth``: ``hit_id, particle_id``, 0 =
noise; ``submission``: ``hit_id, track_id``, a negative label = unassigned, in no track;
optional ``event_id`` in both), checked the same way. The gnn_tracking definition also
needs ``volume_id``/``layer_id`` (the TrackML hits file) and kinematics (see
:func:`particle_table`). Which tracks and particles count, and under which cuts, is one
:class:`MatchSettings`; its ``definition`` is one of :data:`DEFINITIONS`:

* ``"trackformers"``: what the published TrackFormers code computes (its
  ``efficiency_scores``), so that its numbers mean what the paper's mean;
* ``"trackformers_min_hits"``: this project's variant of it, under which the true
  assignment scores 100 % (particles and tracks under ``min_cluster_size`` hits left out
  of the denominators);
* ``"gnn_tracking"``: the gnn_tracking package's definition (layers, pT, |eta| cuts).

See :func:`efficiencies` for the exact rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from data_processing.hit_table import PIXEL_VOLUMES
from evaluation.scoring import (
    EVENT,
    MAX_IDS_SHOWN,
    align_events,
    count_pairs,
    join_hits,
    require_columns,
    unassigned_labels,
)

__all__ = [
    "DEFAULT_BINS",
    "DEFINITIONS",
    "PIXEL_VOLUMES",
    "MatchSettings",
    "efficiencies",
    "efficiency_vs",
    "particle_table",
]

# PIXEL_VOLUMES (TrackML pixel volume ids) drive the layer rule of the gnn_tracking definition.

Definition = Literal["trackformers", "trackformers_min_hits", "gnn_tracking"]
#: Every efficiency definition, the published one first.
DEFINITIONS: tuple[str, ...] = ("trackformers", "trackformers_min_hits", "gnn_tracking")


# --------------------------------------------------------------------------------------
# Particles: hit counts, layers, kinematics
# --------------------------------------------------------------------------------------


def _layer_counts(real_hits: pd.DataFrame, pixel_only: bool) -> pd.Series:
    """Distinct detector layers hit by each (event, particle), as an int Series.

    ``pixel_only=True`` is the gnn_tracking rule: only hits in the pixel volumes (7, 8, 9)
    and distinct RAW ``layer_id`` values, so layer 2 of volume 7 and layer 2 of volume 9
    count once. ``pixel_only=False`` counts distinct (volume_id, layer_id) over all volumes.
    """
    if pixel_only:
        real_hits = real_hits[real_hits["volume_id"].isin(PIXEL_VOLUMES)]
        layer_keys = ["layer_id"]
    else:
        layer_keys = ["volume_id", "layer_id"]
    distinct = real_hits.drop_duplicates([EVENT, "particle_id", *layer_keys])
    return distinct.groupby([EVENT, "particle_id"]).size()


def _kinematics(
    table: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame | None
) -> pd.DataFrame | None:
    """pT (GeV) and momentum pseudorapidity of every particle of ``table``, or None.

    Taken from ``particles`` (``particle_id, px, py, pz`` in GeV, optionally
    ``event_id``) when given, else from per-hit ``pt``/``eta`` columns of ``truth`` (the
    first hit of each particle), else unavailable. Returns ``table`` with ``pt, eta``.
    """
    keys = [EVENT, "particle_id"]
    if particles is not None:
        require_columns(particles, ["particle_id", "px", "py", "pz"], "particles")
        kin = particles[[*([EVENT] if EVENT in particles.columns else []), "particle_id"]]
        if EVENT not in particles.columns:
            # A table without event ids can only describe one event.
            events = pd.unique(table[EVENT])
            if len(events) > 1:
                raise ValueError(
                    f"truth holds {len(events)} events but particles has no event_id column"
                )
            kin = kin.assign(**{EVENT: events[0] if len(events) else 0})
        px, py, pz = (particles[c].to_numpy(dtype=float) for c in ("px", "py", "pz"))
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            # eta = asinh(pz / pT): infinite along the beam, as it should be.
            eta = np.arcsinh(pz / pt)
        kin = kin.assign(pt=pt, eta=eta)
        duplicated = kin.duplicated(keys)
        if duplicated.any():
            ids = list(kin.loc[duplicated, "particle_id"][:MAX_IDS_SHOWN])
            raise ValueError(f"particles has duplicated particle_id(s) {ids}")
        out = table.merge(kin[[*keys, "pt", "eta"]], on=keys, how="left", indicator=True)
        lacking = out["_merge"] == "left_only"
        if lacking.any():
            ids = list(out.loc[lacking, "particle_id"][:MAX_IDS_SHOWN])
            raise ValueError(
                f"particles lacks {int(lacking.sum())} particle(s) that have truth hits, "
                f"e.g. particle_id {ids}"
            )
        return out.drop(columns="_merge")
    if {"pt", "eta"} <= set(truth.columns):
        first = truth.groupby(keys, sort=False)[["pt", "eta"]].first()
        return table.merge(first, left_on=keys, right_index=True, how="left")
    return None


def _particle_table(
    truth: pd.DataFrame, particles: pd.DataFrame | None, pixel_only: bool
) -> pd.DataFrame:
    """Per-particle table from truth hits that already carry ``event_id``.

    See :func:`particle_table` for the output columns.
    """
    real = truth[truth["particle_id"] > 0]
    table = real.groupby([EVENT, "particle_id"]).size().rename("nhits").reset_index()
    if {"volume_id", "layer_id"} <= set(real.columns):
        layers = _layer_counts(real, pixel_only)
        index = pd.MultiIndex.from_frame(table[[EVENT, "particle_id"]])
        table["n_layers"] = layers.reindex(index, fill_value=0).to_numpy()
    with_kinematics = _kinematics(table, real, particles)
    return table if with_kinematics is None else with_kinematics


def particle_table(
    truth: pd.DataFrame, particles: pd.DataFrame | None = None, *, pixel_only: bool = True
) -> pd.DataFrame:
    """One row per real particle (particle_id > 0) that left hits in truth.

    Parameters
    ----------
    truth : DataFrame
        ``hit_id, particle_id``, optionally ``event_id``; ``volume_id, layer_id`` (from
        the TrackML hits file) for the layer count; per-hit ``pt, eta`` as an alternative
        to ``particles``.
    particles : DataFrame, optional
        TrackML particles table: ``particle_id, px, py, pz`` (GeV), optionally
        ``event_id``. Must cover every particle with truth hits. Takes precedence over
        truth's ``pt, eta``. Particles without hits (TrackML's nhits 0) are ignored.
    pixel_only : bool
        Layer rule, see ``n_layers``.

    Returns
    -------
    DataFrame
        ``event_id`` (0 if truth has none), ``particle_id``, ``nhits`` (int, hits in
        truth); ``n_layers`` (int) if truth has volume_id/layer_id: distinct raw layer_id
        values in the pixel volumes 7, 8, 9 (gnn_tracking's rule) or, with
        ``pixel_only=False``, distinct (volume_id, layer_id) over all volumes; ``pt``
        (GeV) and ``eta`` (momentum pseudorapidity) if kinematics were given. Sorted by
        event_id, particle_id.
    """
    require_columns(truth, ["hit_id", "particle_id"], "truth")
    if EVENT not in truth.columns:
        truth = truth.assign(**{EVENT: 0})
    return _particle_table(truth, particles, pixel_only)


# --------------------------------------------------------------------------------------
# Efficiencies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSettings:
    """Which clusters and particles the efficiencies count (see :func:`efficiencies`).

    definition: one of :data:`DEFINITIONS`.
    pt_min: lower pT threshold in GeV (0, 0.5, 0.9 or 1.5 in gnn_tracking; 0.9 the
        headline); for the trackformers definitions 0 means no pT/eta cut at all.
    eta_max: upper bound on |eta| (momentum pseudorapidity).
    min_layers: gnn_tracking: distinct layers a particle needs to be reconstructable.
    pixel_only: gnn_tracking: count layers in the pixel volumes only (see
        :func:`particle_table`).
    min_cluster_size: fewest hits of a submitted track that can match (3 in every
        published definition); for "trackformers_min_hits" also the fewest hits of a
        denominator particle and of a denominator track.
    """

    definition: Definition = "trackformers"
    pt_min: float = 0.0
    eta_max: float = 4.0
    min_layers: int = 3
    pixel_only: bool = True
    min_cluster_size: int = 3

    def __post_init__(self) -> None:
        if self.definition not in DEFINITIONS:
            raise ValueError(
                f"unknown definition {self.definition!r}; use one of {list(DEFINITIONS)}"
            )


def _match(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    particles: pd.DataFrame | None,
    settings: MatchSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match clusters and particles; the shared core of the efficiency functions.

    Returns
    -------
    (particle table, cluster table)
        Particles: :func:`particle_table` columns plus bool ``selected`` (in the
        efficiency denominator), ``perfect``, ``double_majority`` and int ``n_lhc_tracks``
        (LHC-matched clusters whose majority particle it is). Clusters: one row per
        (event, track), unassigned labels left out, with ``event_id, track_id``, majority
        ``particle_id`` (most hits;
        ties go to the smallest particle_id, as in trackml-library), ``track_nhits``,
        bool ``selected`` (in the cluster denominator), ``perfect``, ``double_majority``,
        ``lhc``.
    """
    gnn = settings.definition == "gnn_tracking"
    published = settings.definition == "trackformers"
    layer_columns = ["volume_id", "layer_id"] if gnn else []
    if gnn:
        require_columns(
            truth,
            layer_columns,
            "truth (the gnn_tracking definition counts layers: merge in the TrackML hits "
            "file's volume_id and layer_id)",
        )
    kin_columns = [c for c in ("pt", "eta") if c in truth.columns]
    truth, submission = align_events(
        truth, submission, ["particle_id", *layer_columns, *kin_columns], False
    )
    hits = join_hits(truth, submission)
    table = _particle_table(hits, particles, settings.pixel_only)

    pairs = count_pairs(hits)
    n_hits = pairs["n_hits"].to_numpy()
    track_nhits = pairs["track_nhits"].to_numpy()
    purity = n_hits / track_nhits
    completeness = n_hits / pairs["particle_nhits"].to_numpy()
    # A negative label (HDBSCAN's -1) is "no cluster" whatever its size, in every
    # definition (SPEC: an unassigned hit is in no track).
    unassigned = unassigned_labels(pairs["track_id"].to_numpy())
    valid = (track_nhits >= settings.min_cluster_size) & ~unassigned
    # Noise is never a particle to be found: a cluster of noise matches nothing.
    base = valid & (pairs["particle_id"].to_numpy() > 0)
    pairs["perfect"] = base & (n_hits == pairs["particle_nhits"].to_numpy()) & (purity > 0.99)
    pairs["double_majority"] = base & (purity > 0.5) & (completeness > 0.5)
    pairs["lhc"] = base & (purity > 0.75)
    pairs["valid"] = valid
    pairs["unassigned"] = unassigned

    # Particle side: at most one cluster can hold > 50 % of a particle, so "any" = count.
    keys = [EVENT, "particle_id"]
    per_particle = pairs.groupby(keys).agg(
        perfect=("perfect", "any"),
        double_majority=("double_majority", "any"),
        n_lhc_tracks=("lhc", "sum"),
    )
    # Every particle with truth hits is in some pair, so this look-up cannot miss.
    matched = per_particle.loc[pd.MultiIndex.from_frame(table[keys])]
    for column in ("perfect", "double_majority"):
        table[column] = matched[column].to_numpy(dtype=bool)
    table["n_lhc_tracks"] = matched["n_lhc_tracks"].to_numpy(dtype=np.int64)

    # gnn_tracking always applies its |eta| cut; trackformers applies pT/eta cuts only
    # when asked for (pt_min > 0), so that its default reproduces the published numbers.
    kinematic_cut = settings.pt_min > 0 or (gnn and bool(np.isfinite(settings.eta_max)))
    if kinematic_cut and "pt" not in table.columns:
        raise ValueError(
            f"the {settings.definition} pT/eta cuts need kinematics: pass particles (px, py, pz) "
            "or give truth per-hit pt and eta columns"
        )
    if gnn:
        selected = table["n_layers"].to_numpy() >= settings.min_layers
    elif published:
        # The published code divides by every distinct particle id of the truth, also
        # those with fewer hits than any cluster can match (noise, id 0, is no particle).
        selected = np.ones(len(table), dtype=bool)
    else:
        # A particle with fewer hits than the smallest cluster can never be matched:
        # counting it would keep even the true assignment below 100 %.
        selected = table["nhits"].to_numpy() >= settings.min_cluster_size
    in_range = np.ones(len(table), dtype=bool)
    if kinematic_cut:
        in_range = (table["pt"].to_numpy() >= settings.pt_min) & (
            np.abs(table["eta"].to_numpy()) < settings.eta_max
        )
    table["selected"] = selected & in_range

    return table, _track_table(pairs, table, settings, in_range, kinematic_cut)


def _track_table(
    pairs: pd.DataFrame,
    table: pd.DataFrame,
    settings: MatchSettings,
    in_range: np.ndarray,
    kinematic_cut: bool,
) -> pd.DataFrame:
    """One row per submitted track (unassigned labels left out), see :func:`_match`.

    ``pairs``: the flagged pairs of :func:`_match`; ``table``: its particle table with
    ``selected``; ``in_range``: [particles] bool, inside the pT/eta cut.
    """
    keys = [EVENT, "particle_id"]
    # The majority pair of each track carries the track's match flags (every criterion
    # needs > 50 % purity, which only the majority particle can have).
    clusters = pairs.sort_values(
        [EVENT, "track_id", "n_hits", "particle_id"], ascending=[True, True, False, True]
    ).drop_duplicates([EVENT, "track_id"])
    # The unassigned hits of an event are not a submitted track at all.
    clusters = clusters[~clusters["unassigned"].to_numpy()]
    flags = ["valid", "perfect", "double_majority", "lhc"]
    clusters = clusters[[EVENT, "track_id", "particle_id", "track_nhits", *flags]]
    clusters = clusters.reset_index(drop=True)
    # The published code divides LHC by every submitted track, valid (>= 3 hits) or not.
    published = settings.definition == "trackformers"
    selected = np.ones(len(clusters), dtype=bool) if published else clusters["valid"].to_numpy()
    majority = pd.MultiIndex.from_frame(clusters[keys])
    if settings.definition == "gnn_tracking":
        # gnn_tracking counts only clusters whose majority particle is in the particle
        # denominator: a cluster of a low-pT particle is neither a match nor a fake.
        chosen = pd.MultiIndex.from_frame(table.loc[table["selected"], keys])
        selected = selected & majority.isin(chosen)
    elif kinematic_cut:
        # trackformers with a pT cut: likewise for particles outside the pT/eta range,
        # but tracks of noise (or of short particles) still count, as without a cut.
        outside = pd.MultiIndex.from_frame(table.loc[~in_range, keys])
        selected = selected & ~majority.isin(outside)
    clusters["selected"] = selected
    return clusters.drop(columns="valid")


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, NaN for an empty denominator (as gnn_tracking)."""
    return numerator / denominator if denominator else float("nan")


def efficiencies(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    particles: pd.DataFrame | None = None,
    settings: MatchSettings = MatchSettings(),
) -> dict[str, float | int]:
    """Perfect, double-majority and LHC efficiencies, fake and duplicate rates.

    A track is a distinct submitted label >= 0: hits with a negative label are unassigned,
    in no track (SPEC section 5), in every definition. A track can match only when it is
    valid: at least ``settings.min_cluster_size`` hits (3 in every published definition).
    Matching always uses all hits (an unassigned hit of p still counts in nhits(p));
    noise (particle_id 0) is no particle: it is never matched and never in a particle
    denominator. For a valid track c and a particle p sharing n hits:

    * perfect: n equals all of p's hits and n / size(c) > 0.99;
    * double majority (DM): n / size(c) > 0.5 and n / nhits(p) > 0.5;
    * LHC: n / size(c) > 0.75.

    Definitions (``settings.definition``; SPEC section 5):

    * ``"trackformers"``: what the published code computes (its ``efficiency_scores``).
      Perfect and DM: matched particles / every distinct particle_id > 0 in truth, also
      those with 1 or 2 hits, which no valid track can match (so the true assignment of
      an event holding such particles stays below 100 %). LHC: LHC-matched tracks /
      every submitted track, also those under ``min_cluster_size`` hits (so splitting off
      short fragments lowers LHC even though no fragment is a wrong match). Submit
      unclustered hits with a negative label, not as singletons or one shared label: the
      published pipeline never counted HDBSCAN's -1 hits as a track.
    * ``"trackformers_min_hits"`` (this project's variant): the same matching, but the
      particle denominator holds only particles with at least ``min_cluster_size`` hits
      and the LHC / fake-rate denominator only valid tracks, so the true assignment
      scores 100 % and a short fragment is no track. Every REDVID particle of the
      shipped data sets has at least 3 hits, so both agree on their perfect and DM.
    * ``"gnn_tracking"``: particle denominator: particle_id > 0, at least ``min_layers``
      layers (see :func:`particle_table`; truth must carry volume_id and layer_id),
      pT >= ``pt_min`` (GeV) and |eta| < ``eta_max`` (kinematics from ``particles`` or
      from truth's per-hit pt/eta columns). Track denominator: valid tracks whose
      majority particle is in the particle denominator (as gnn_tracking does).

    Neither trackformers definition cuts on pT or eta by default; with ``pt_min > 0``
    their particle denominator also needs pT >= ``pt_min`` and |eta| < ``eta_max``
    (kinematics needed, as above) and tracks whose majority particle is outside that
    range leave the track denominator (tracks of noise stay in it).

    Parameters
    ----------
    truth, submission : DataFrame
        As for :func:`evaluation.scoring.score_event` (weight not needed). With
        ``event_id`` in both, counts are pooled over all events and particles are keyed
        by (event_id, particle_id).
    particles : DataFrame, optional
        See :func:`particle_table`. Not needed when truth carries per-hit ``pt`` and
        ``eta`` columns (as ``EventSet.truth_frame()`` of a TrackML hit table does).
    settings : MatchSettings
        Definition, cuts and the smallest valid track.

    Returns
    -------
    dict
        Fractions (float, NaN when the denominator is empty):
        ``perfect`` / ``double_majority``: matched denominator particles / ``n_particles``;
        ``lhc``: LHC-matched denominator tracks / ``n_tracks``;
        ``fake_rate``: 1 - DM-matched denominator tracks / ``n_tracks``;
        ``duplicate_rate``: denominator particles that are the majority particle of two or
        more LHC-matched tracks / those of at least one.
        Counts (int): ``n_particles`` (particle denominator; equals ``n_reconstructable``,
        kept as the gnn_tracking name), ``n_reconstructable``, ``n_particles_with_hits``
        (every particle_id > 0 with hits, before any cut), ``n_tracks`` (track
        denominator), ``n_submitted_tracks`` (distinct labels >= 0), ``n_perfect``,
        ``n_double_majority``, ``n_lhc_tracks``, ``n_matched_tracks`` (DM-matched
        denominator tracks), ``n_lhc_matched_particles``, ``n_duplicated_particles``.
    """
    table, clusters = _match(truth, submission, particles, settings)
    chosen = table[table["selected"]]
    counted = clusters[clusters["selected"]]
    n_particles = len(chosen)
    n_tracks = len(counted)
    n_perfect = int(chosen["perfect"].sum())
    n_dm = int(chosen["double_majority"].sum())
    n_lhc_tracks = int(counted["lhc"].sum())
    n_matched_tracks = int(counted["double_majority"].sum())
    n_lhc_particles = int((chosen["n_lhc_tracks"] >= 1).sum())
    n_duplicated = int((chosen["n_lhc_tracks"] >= 2).sum())
    return {
        "perfect": _ratio(n_perfect, n_particles),
        "double_majority": _ratio(n_dm, n_particles),
        "lhc": _ratio(n_lhc_tracks, n_tracks),
        "fake_rate": 1.0 - _ratio(n_matched_tracks, n_tracks),
        "duplicate_rate": _ratio(n_duplicated, n_lhc_particles),
        "n_particles": n_particles,
        "n_reconstructable": n_particles,
        "n_particles_with_hits": len(table),
        "n_tracks": n_tracks,
        "n_submitted_tracks": len(clusters),
        "n_perfect": n_perfect,
        "n_double_majority": n_dm,
        "n_lhc_tracks": n_lhc_tracks,
        "n_matched_tracks": n_matched_tracks,
        "n_lhc_matched_particles": n_lhc_particles,
        "n_duplicated_particles": n_duplicated,
    }


#: Default bin edges of :func:`efficiency_vs`: pT in GeV (the gnn_tracking thresholds),
#: eta in steps of 0.5 over the acceptance.
DEFAULT_BINS = {
    "pt": np.array([0.0, 0.5, 0.9, 1.5, 3.0, 10.0, np.inf]),
    "eta": np.linspace(-4.0, 4.0, 17),
}


def efficiency_vs(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    particles: pd.DataFrame | None,
    variable: Literal["pt", "eta"] = "pt",
    bins: Sequence[float] | np.ndarray | None = None,
    settings: MatchSettings = MatchSettings(),
) -> pd.DataFrame:
    """Perfect and double-majority efficiency binned in the particles' pT or eta.

    Parameters
    ----------
    truth, submission, particles, settings
        As for :func:`efficiencies`; kinematics (``particles`` or truth's pt/eta columns)
        are required here whatever the definition.
    variable : {"pt", "eta"}
        pT in GeV or momentum pseudorapidity of the particle.
    bins : sequence of float, optional
        Increasing bin edges; bins are [low, high). Default :data:`DEFAULT_BINS`.
        Denominator particles outside the edges are not counted.

    Returns
    -------
    DataFrame
        One row per bin: ``low``, ``high`` (float), ``n_particles``, ``n_perfect``,
        ``n_double_majority`` (int) and ``perfect``, ``double_majority`` (float, NaN for
        an empty bin).
    """
    if variable not in DEFAULT_BINS:
        raise ValueError(f"variable must be 'pt' or 'eta', not {variable!r}")
    edges = np.asarray(DEFAULT_BINS[variable] if bins is None else bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing edges, got {edges}")
    table, _ = _match(truth, submission, particles, settings)
    if variable not in table.columns:
        raise ValueError(
            "efficiency_vs needs kinematics: pass particles (px, py, pz) or give truth "
            "per-hit pt and eta columns"
        )
    chosen = table[table["selected"]]
    n_bins = len(edges) - 1
    # [low, high) bins: index i holds edges[i] <= x < edges[i + 1]; -1 / n_bins = outside.
    which = np.searchsorted(edges, chosen[variable].to_numpy(dtype=float), side="right") - 1
    inside = (which >= 0) & (which < n_bins)
    which = which[inside]

    def count(flags: np.ndarray | None = None) -> np.ndarray:
        weights = None if flags is None else flags[inside].astype(float)
        return np.bincount(which, weights=weights, minlength=n_bins).astype(np.int64)

    n_particles = count()
    n_perfect = count(chosen["perfect"].to_numpy())
    n_dm = count(chosen["double_majority"].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        perfect = np.where(n_particles > 0, n_perfect / n_particles, np.nan)
        double_majority = np.where(n_particles > 0, n_dm / n_particles, np.nan)
    return pd.DataFrame(
        {
            "low": edges[:-1],
            "high": edges[1:],
            "n_particles": n_particles,
            "n_perfect": n_perfect,
            "n_double_majority": n_dm,
            "perfect": perfect,
            "double_majority": double_majority,
        }
    )
