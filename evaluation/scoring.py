"""TrackML score and tracking efficiencies of a hit -> track assignment.

Every function here compares two per-hit tables:

* ``truth``: one row per hit with ``hit_id`` and ``particle_id`` (int; 0 = noise) and, for
  the score, ``weight`` (float, >= 0). Noise (particle 0) weighs 0 in the score whatever
  its ``weight`` says (SPEC section 5; TrackML's files already give it 0, REDVID's give
  every hit 1, so there track hits weigh 1 and noise 0). The efficiencies may also need
  ``volume_id``/``layer_id`` (the TrackML hits file) and per-particle kinematics (see
  :func:`particle_table`).
* ``submission``: one row per hit with ``hit_id`` and ``track_id`` (any labels, only
  equality matters), except that a NEGATIVE numeric label (HDBSCAN's -1 under
  ``--noise unassigned``) means "unassigned": the hit is in no track, for the score and
  for both efficiency definitions, however many hits share that label.

Every truth hit must appear exactly once in the submission, as in trackml-library's
``score_event``. With an ``event_id`` column in both frames, hit ids only need to be unique
within an event and all events are handled in one vectorised pass.

The whole module works on the table of (event, track, particle) pairs (:func:`pair_table`):
how many hits of particle p track t holds, next to the size of t and the hit count of p.
Every criterion below asks for a fraction strictly above 50 %, so at most one particle per
track can pass it, and that particle is necessarily the track's majority particle. Hence
the criteria can be read directly off the pairs, and the tie-breaking of the majority
particle cannot change the score or whether a track matches a particle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_BINS",
    "PIXEL_VOLUMES",
    "efficiencies",
    "efficiency_vs",
    "misassigned_hits",
    "pair_table",
    "particle_table",
    "score_event",
    "score_per_event",
]

EVENT = "event_id"
#: TrackML volume ids of the pixel detector (the layer rule of the gnn_tracking definition).
PIXEL_VOLUMES = (7, 8, 9)
#: How many offending ids an error message lists (it also gives their total count).
_MAX_IDS_SHOWN = 5

Definition = Literal["trackformers", "gnn_tracking"]


# --------------------------------------------------------------------------------------
# Input checks and joining truth with submission
# --------------------------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise ValueError naming the columns of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def _ids_text(frame: pd.DataFrame, mask: pd.Series | np.ndarray) -> str:
    """Name the first few hits selected by ``mask`` and say how many there are.

    Ids are shown as (event_id, hit_id) when ``frame`` spans several events, since hit ids
    are then only unique within an event. Example: ``"hit_id 6, 9 (2 in all)"``.
    """
    bad = frame.loc[mask, [EVENT, "hit_id"]].drop_duplicates()
    shown = bad.head(_MAX_IDS_SHOWN)
    if frame[EVENT].nunique() > 1:
        items = [f"(event {e}, hit {h})" for e, h in shown.itertuples(index=False)]
        return f"(event_id, hit_id) {', '.join(items)} ({len(bad)} in all)"
    return f"hit_id {', '.join(str(h) for h in shown['hit_id'])} ({len(bad)} in all)"


def _align_events(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    truth_columns: Sequence[str],
    require_event_id: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Select the needed columns and give both frames an ``event_id`` column.

    Returns copies holding ``event_id, hit_id, *truth_columns`` and
    ``event_id, hit_id, track_id``. A frame without ``event_id`` is one event: it takes the
    other frame's single event id, or 0 when neither frame has the column.
    """
    _require_columns(truth, ["hit_id", *truth_columns], "truth")
    _require_columns(submission, ["hit_id", "track_id"], "submission")
    t_has, s_has = EVENT in truth.columns, EVENT in submission.columns
    if require_event_id and not (t_has and s_has):
        raise ValueError(
            "per-event scoring needs an 'event_id' column in both truth and submission "
            f"(truth has it: {t_has}, submission has it: {s_has}); "
            "use score_event for a single event"
        )
    truth = truth[[*([EVENT] if t_has else []), "hit_id", *truth_columns]]
    submission = submission[[*([EVENT] if s_has else []), "hit_id", "track_id"]]
    if t_has and s_has:
        return truth, submission
    if t_has or s_has:
        # Only one frame says which event it is: the other can only be that same event.
        name, events = ("truth", truth[EVENT]) if t_has else ("submission", submission[EVENT])
        values = pd.unique(events)
        if len(values) > 1:
            raise ValueError(
                f"only {name} has an event_id column and it holds {len(values)} events "
                f"(e.g. {list(values[:_MAX_IDS_SHOWN])}); give both frames an event_id column"
            )
        value = values[0] if len(values) else 0
    else:
        value = 0
    if not t_has:
        truth = truth.assign(**{EVENT: value})
    if not s_has:
        submission = submission.assign(**{EVENT: value})
    return truth, submission


def _dense_codes(*columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Label every distinct combination of equally long columns with 0..n-1.

    Returns (int64 codes, n). Hash-based (``pd.factorize``), so O(rows) whatever the
    values' type. Codes are re-densified after each column so that the mixed-radix
    product stays below rows**2 and cannot overflow int64.
    """
    codes, uniques = pd.factorize(columns[0])
    n = len(uniques)
    for column in columns[1:]:
        column_codes, uniques = pd.factorize(column)
        if n == 1:  # e.g. a single event: nothing to combine
            codes, n = column_codes, len(uniques)
        else:
            codes, combined = pd.factorize(codes * len(uniques) + column_codes)
            n = len(combined)
    return codes.astype(np.int64, copy=False), n


def _join_hits(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """Check the two aligned frames hit by hit and join them.

    Inputs are the outputs of :func:`_align_events`. Raises ValueError (naming some
    offending ids) for a null event_id, hit_id, particle_id, weight or track_id, a
    negative or infinite weight, a hit_id duplicated within an event in either frame, a
    truth hit missing from the submission, or a submitted hit that truth does not know.
    Returns truth's rows (fresh RangeIndex) with the submission's ``track_id`` added.
    """
    checked = (EVENT, "hit_id", "particle_id", "weight", "track_id")
    for frame, name in ((truth, "truth"), (submission, "submission")):
        for column in (c for c in checked if c in frame.columns):
            null = frame[column].isna().to_numpy()
            if null.any():
                raise ValueError(f"{name} has null {column} at {_ids_text(frame, null)}")
    if "weight" in truth.columns:
        weight = truth["weight"].to_numpy(dtype=float)
        bad = ~np.isfinite(weight) | (weight < 0)
        if bad.any():
            raise ValueError(f"truth has negative or infinite weight at {_ids_text(truth, bad)}")
    # One integer key per (event_id, hit_id), shared by both frames, so that the checks
    # and the join below are hash look-ups rather than multi-column merges.
    keys, _ = _dense_codes(
        np.concatenate([truth[EVENT].to_numpy(), submission[EVENT].to_numpy()]),
        np.concatenate([truth["hit_id"].to_numpy(), submission["hit_id"].to_numpy()]),
    )
    truth_keys, submission_keys = pd.Index(keys[: len(truth)]), pd.Index(keys[len(truth) :])
    for frame, frame_keys, name in (
        (truth, truth_keys, "truth"),
        (submission, submission_keys, "submission"),
    ):
        duplicated = frame_keys.duplicated(keep=False)
        if duplicated.any():
            raise ValueError(f"{name} has duplicated hits: {_ids_text(frame, duplicated)}")
    # Row of the submission that holds each truth hit (-1: not submitted).
    row = submission_keys.get_indexer(truth_keys)
    missing = row < 0
    if missing.any():
        raise ValueError(f"submission lacks truth hits: {_ids_text(truth, missing)}")
    extra = np.ones(len(submission), dtype=bool)
    extra[row] = False
    if extra.any():
        raise ValueError(f"submission has hits not in truth: {_ids_text(submission, extra)}")
    hits = truth.reset_index(drop=True)
    hits["track_id"] = submission["track_id"].to_numpy()[row]
    return hits


def _unassigned(track_id: np.ndarray) -> np.ndarray:
    """[n] bool: which labels mean "in no track" (negative numbers; see the module doc).

    Non-numeric labels (strings) cannot be negative: they are all tracks.
    """
    track_id = np.asarray(track_id)
    if np.issubdtype(track_id.dtype, np.number):
        return track_id < 0
    return np.zeros(track_id.shape, dtype=bool)


def _pairs(hits: pd.DataFrame) -> pd.DataFrame:
    """Count the hits of every (event, track, particle) pair of joined hits.

    Input: the output of :func:`_join_hits` (``event_id, track_id, particle_id`` and
    optionally ``weight``). Output: one row per pair, in order of first appearance, with
    ``event_id, track_id, particle_id``, ``n_hits`` (int, the pair's hits), ``weight``
    (float, their summed weight, noise hits counting 0; only when hits carry weight),
    ``track_nhits`` (int, hits sharing the label) and ``particle_nhits`` (int, hits of
    the particle in truth: every truth hit has exactly one label). Unassigned hits
    (negative labels) form pairs like any label; callers must not treat them as a track.
    """
    event = hits[EVENT].to_numpy()
    track, n_tracks = _dense_codes(event, hits["track_id"].to_numpy())
    particle, n_particles = _dense_codes(event, hits["particle_id"].to_numpy())
    # track and particle are already dense codes: one factorize of their product suffices.
    pair, combined = pd.factorize(track * n_particles + particle)
    n_pairs = len(combined)
    # Any one row of each pair stands for it (all its rows share the ids); which one a
    # repeated-index assignment keeps does not matter.
    representative = np.empty(n_pairs, dtype=np.int64)
    representative[pair] = np.arange(len(hits))
    pairs = hits[[EVENT, "track_id", "particle_id"]].iloc[representative].reset_index(drop=True)
    pairs["n_hits"] = np.bincount(pair, minlength=n_pairs)
    if "weight" in hits.columns:
        # SPEC: noise carries weight 0, whatever the truth file says (REDVID gives it 1,
        # and a noise hit must not earn score credit for sharing a track with others).
        weight = np.where(
            hits["particle_id"].to_numpy() == 0, 0.0, hits["weight"].to_numpy(dtype=float)
        )
        pairs["weight"] = np.bincount(pair, weights=weight, minlength=n_pairs)
    pairs["track_nhits"] = np.bincount(track, minlength=n_tracks)[track[representative]]
    pairs["particle_nhits"] = np.bincount(particle, minlength=n_particles)[particle[representative]]
    return pairs


def pair_table(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """Table of (event, track, particle) pairs: the raw material of every metric here.

    Parameters
    ----------
    truth : DataFrame
        ``hit_id, particle_id`` and optionally ``weight`` and ``event_id``.
    submission : DataFrame
        ``hit_id, track_id`` and optionally ``event_id``; checked against truth as in
        :func:`score_event`.

    Returns
    -------
    DataFrame
        One row per pair: ``event_id`` (0 when the inputs have none), ``track_id``,
        ``particle_id``, ``n_hits`` (int), ``weight`` (float, if truth has weights; 0 for
        noise), ``track_nhits``, ``particle_nhits`` (int), ``purity`` = n_hits /
        track_nhits and ``completeness`` = n_hits / particle_nhits (float, in (0, 1]).
        Hits with a negative label form pairs too (their label is no track: see
        :func:`efficiencies` and :func:`score_event` for how they count).
    """
    columns = ["particle_id", *(["weight"] if "weight" in truth.columns else [])]
    pairs = _pairs(_join_hits(*_align_events(truth, submission, columns, False)))
    pairs["purity"] = pairs["n_hits"] / pairs["track_nhits"]
    pairs["completeness"] = pairs["n_hits"] / pairs["particle_nhits"]
    return pairs


# --------------------------------------------------------------------------------------
# TrackML score
# --------------------------------------------------------------------------------------


def _scores(hits: pd.DataFrame) -> pd.Series:
    """TrackML score of every event of joined hits, as a Series indexed by event_id."""
    if hits.empty:
        # Otherwise an empty Series comes back and score_event fails on an IndexError.
        raise ValueError("no hits to score: truth and submission are both empty")
    pairs = _pairs(hits)
    n_hits = pairs["n_hits"].to_numpy()
    # Good pair = good track with its majority particle (see module docstring). Both
    # ratios strictly above one half, as trackml-library (exactly 50 % is not good).
    # Unassigned hits are in no track, so they never earn credit, however many share -1.
    good = (
        (n_hits > 0.5 * pairs["track_nhits"].to_numpy())
        & (n_hits > 0.5 * pairs["particle_nhits"].to_numpy())
        & ~_unassigned(pairs["track_id"].to_numpy())
    )
    event, n_events = _dense_codes(pairs[EVENT].to_numpy())
    weight = pairs["weight"].to_numpy()
    # The total is summed over the same pair weights as the good part, in the same order,
    # so a perfect submission scores exactly 1.0 rather than 1 +- rounding.
    total = np.bincount(event, weights=weight, minlength=n_events)
    good_weight = np.bincount(event, weights=np.where(good, weight, 0.0), minlength=n_events)
    representative = np.empty(n_events, dtype=np.int64)
    representative[event] = np.arange(len(pairs))
    event_ids = pairs[EVENT].iloc[representative]
    empty = total <= 0
    if empty.any():
        raise ValueError(
            f"total truth weight is 0 in event(s) {list(event_ids[empty][:_MAX_IDS_SHOWN])}"
            " (noise, particle_id 0, always weighs 0): the score is undefined"
        )
    scores = pd.Series(good_weight / total, index=pd.Index(event_ids, name=EVENT), name="score")
    return scores.sort_index()


def score_event(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """TrackML score of one event (trackml-library's value on TrackML truth).

    A reconstructed track is good when more than 50 % of its hits come from one particle
    and it holds more than 50 % of that particle's hits. The score is the summed weight of
    the good tracks' hits that belong to their majority particle, divided by the total
    truth weight. Two rules of SPEC section 5 go beyond trackml-library, neither changing
    its value on TrackML data (noise weight 0, no negative labels): noise (particle_id 0)
    weighs 0 whatever truth's ``weight`` says (so REDVID's unit noise weights earn no
    credit), and hits with a negative label are in no track (no credit, but their
    weight stays in the total).

    Parameters
    ----------
    truth : DataFrame
        ``hit_id`` (int), ``particle_id`` (int, 0 = noise), ``weight`` (float, >= 0, total
        > 0). An ``event_id`` column is allowed if it holds a single value.
    submission : DataFrame
        ``hit_id``, ``track_id`` (not null; negative = unassigned), optionally a
        single-valued ``event_id``. Every truth hit exactly once, nothing else.

    Returns
    -------
    float
        The score in [0, 1]; exactly 1.0 for truth submitted as its own assignment.

    Raises
    ------
    ValueError
        Missing columns; several events; no hits at all; missing, extra or duplicated hit
        ids (the message names some); null ids, labels or weights; zero total weight
        (e.g. an event of noise only).
    """
    truth, submission = _align_events(truth, submission, ["particle_id", "weight"], False)
    for frame, name in ((truth, "truth"), (submission, "submission")):
        events = pd.unique(frame[EVENT])
        if len(events) > 1:
            raise ValueError(
                f"score_event scores one event but {name} holds {len(events)} event_ids "
                f"(e.g. {list(events[:_MAX_IDS_SHOWN])}); use score_per_event"
            )
    return float(_scores(_join_hits(truth, submission)).iloc[0])


def score_per_event(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.Series:
    """TrackML score of every event, computed in one vectorised pass.

    Parameters
    ----------
    truth, submission : DataFrame
        As for :func:`score_event`, both with an ``event_id`` column; hit ids need only be
        unique within an event. Every truth event must be in the submission and vice versa
        (otherwise its hits are reported missing / extra).

    Returns
    -------
    Series
        Float scores named ``score``, indexed by ``event_id`` (sorted); each equals
        :func:`score_event` on that event alone.
    """
    truth, submission = _align_events(truth, submission, ["particle_id", "weight"], True)
    return _scores(_join_hits(truth, submission))


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
        _require_columns(particles, ["particle_id", "px", "py", "pz"], "particles")
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
            ids = list(kin.loc[duplicated, "particle_id"][:_MAX_IDS_SHOWN])
            raise ValueError(f"particles has duplicated particle_id(s) {ids}")
        out = table.merge(kin[[*keys, "pt", "eta"]], on=keys, how="left", indicator=True)
        lacking = out["_merge"] == "left_only"
        if lacking.any():
            ids = list(out.loc[lacking, "particle_id"][:_MAX_IDS_SHOWN])
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
    _require_columns(truth, ["hit_id", "particle_id"], "truth")
    if EVENT not in truth.columns:
        truth = truth.assign(**{EVENT: 0})
    return _particle_table(truth, particles, pixel_only)


# --------------------------------------------------------------------------------------
# Efficiencies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSettings:
    """Which clusters and particles the efficiencies count (see :func:`efficiencies`)."""

    definition: Definition = "trackformers"
    pt_min: float = 0.0
    eta_max: float = 4.0
    min_layers: int = 3
    pixel_only: bool = True
    min_cluster_size: int = 3


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
    if settings.definition not in ("trackformers", "gnn_tracking"):
        raise ValueError(
            f"unknown definition {settings.definition!r}; use 'trackformers' or 'gnn_tracking'"
        )
    gnn = settings.definition == "gnn_tracking"
    layer_columns = ["volume_id", "layer_id"] if gnn else []
    if gnn:
        _require_columns(
            truth,
            layer_columns,
            "truth (the gnn_tracking definition counts layers: merge in the TrackML hits "
            "file's volume_id and layer_id)",
        )
    kin_columns = [c for c in ("pt", "eta") if c in truth.columns]
    truth, submission = _align_events(
        truth, submission, ["particle_id", *layer_columns, *kin_columns], False
    )
    hits = _join_hits(truth, submission)
    table = _particle_table(hits, particles, settings.pixel_only)

    pairs = _pairs(hits)
    n_hits = pairs["n_hits"].to_numpy()
    track_nhits = pairs["track_nhits"].to_numpy()
    purity = n_hits / track_nhits
    completeness = n_hits / pairs["particle_nhits"].to_numpy()
    # A negative label (HDBSCAN's -1) is "no cluster" whatever its size, in both
    # definitions (SPEC: an unassigned hit is in no track).
    unassigned = _unassigned(pairs["track_id"].to_numpy())
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

    # Cluster side: the majority pair of each cluster carries the cluster's match flags
    # (every criterion needs > 50 % purity, which only the majority particle can have).
    clusters = pairs.sort_values(
        [EVENT, "track_id", "n_hits", "particle_id"], ascending=[True, True, False, True]
    ).drop_duplicates([EVENT, "track_id"])
    # The unassigned hits of an event are not a submitted track at all.
    clusters = clusters[~clusters["unassigned"].to_numpy()]
    flags = ["valid", "perfect", "double_majority", "lhc"]
    clusters = clusters[[EVENT, "track_id", "particle_id", "track_nhits", *flags]]
    clusters = clusters.reset_index(drop=True)
    selected = clusters["valid"].to_numpy()
    majority = pd.MultiIndex.from_frame(clusters[keys])
    if gnn:
        # gnn_tracking counts only clusters whose majority particle is in the particle
        # denominator: a cluster of a low-pT particle is neither a match nor a fake.
        chosen = pd.MultiIndex.from_frame(table.loc[table["selected"], keys])
        selected = selected & majority.isin(chosen)
    elif kinematic_cut:
        # trackformers with a pT cut: likewise for particles outside the pT/eta range,
        # but clusters of noise (or of short particles) still count, as without a cut.
        outside = pd.MultiIndex.from_frame(table.loc[~in_range, keys])
        selected = selected & ~majority.isin(outside)
    clusters["selected"] = selected
    return table, clusters.drop(columns="valid")


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, NaN for an empty denominator (as gnn_tracking)."""
    return numerator / denominator if denominator else float("nan")


def efficiencies(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    particles: pd.DataFrame | None = None,
    definition: Definition = "trackformers",
    pt_min: float = 0.0,
    eta_max: float = 4.0,
    min_layers: int = 3,
    pixel_only: bool = True,
    min_cluster_size: int = 3,
) -> dict[str, float | int]:
    """Perfect, double-majority and LHC efficiencies, fake and duplicate rates.

    A cluster is a submitted track with at least ``min_cluster_size`` hits and a label
    >= 0: hits with a negative label are unassigned, in no cluster (SPEC section 5), in
    both definitions. Matching always uses all hits (an unassigned hit of p still counts
    in nhits(p)); noise (particle_id 0) is never matched. For a cluster c and a particle p
    sharing n hits:

    * perfect: n equals all of p's hits and n / size(c) > 0.99;
    * double majority (DM): n / size(c) > 0.5 and n / nhits(p) > 0.5;
    * LHC: n / size(c) > 0.75.

    Definitions (SPEC section 5):

    * ``"trackformers"`` (how the published numbers were computed): no layer cuts
      (``min_layers``, ``pixel_only`` are ignored). Particle denominator: every
      particle_id > 0 with at least ``min_cluster_size`` hits in truth. A particle with
      fewer hits can form no cluster, so counting it would keep even the true assignment
      below 100 % (on the TrackML sample event 37 of 468 particles have 1-2 hits); every
      REDVID track has at least 5 hits, so the published REDVID numbers are unaffected.
      Cluster denominator: every cluster, including one made of noise hits (it is a
      fake). Submit unclustered hits as singleton tracks or with a negative label, not
      as one shared label >= 0, or they form one big fake cluster. No pT/eta cut by
      default; with
      ``pt_min > 0`` the particle denominator also needs pT >= ``pt_min`` and
      |eta| < ``eta_max`` (kinematics needed, as below) and clusters whose majority
      particle is a particle outside that range are not counted.
    * ``"gnn_tracking"``: particle denominator: particle_id > 0, at least ``min_layers``
      layers (see :func:`particle_table`; truth must carry volume_id and layer_id),
      pT >= ``pt_min`` (GeV) and |eta| < ``eta_max`` (kinematics from ``particles`` or
      from truth's per-hit pt/eta columns). Cluster denominator: clusters whose majority
      particle is in the particle denominator (as gnn_tracking does).

    Parameters
    ----------
    truth, submission : DataFrame
        As for :func:`score_event` (weight not needed). With ``event_id`` in both, counts
        are pooled over all events and particles are keyed by (event_id, particle_id).
    particles : DataFrame, optional
        See :func:`particle_table`. Not needed when truth carries per-hit ``pt`` and
        ``eta`` columns (as ``EventSet.truth_frame()`` of a TrackML hit table does).
    definition : {"trackformers", "gnn_tracking"}
        Which denominators and cuts, see above.
    pt_min : float
        Lower pT threshold in GeV (0, 0.5, 0.9 or 1.5 in gnn_tracking; 0.9 the headline).
    eta_max : float
        Upper bound on |eta| (momentum pseudorapidity), applied as described above.
    min_layers : int
        gnn_tracking: distinct layers a particle needs to be reconstructable.
    pixel_only : bool
        gnn_tracking: count layers in the pixel volumes only (see :func:`particle_table`).
    min_cluster_size : int
        Smallest submitted track that counts as a cluster (and, for trackformers, the
        fewest hits a particle needs to be in the denominator).

    Returns
    -------
    dict
        Fractions (float, NaN when the denominator is empty):
        ``perfect`` / ``double_majority``: matched denominator particles / ``n_particles``;
        ``lhc``: LHC-matched denominator clusters / ``n_tracks``;
        ``fake_rate``: 1 - DM-matched denominator clusters / ``n_tracks``;
        ``duplicate_rate``: denominator particles that are the majority particle of two or
        more LHC-matched clusters / those of at least one.
        Counts (int): ``n_particles`` (particle denominator; equals ``n_reconstructable``,
        kept as the gnn_tracking name), ``n_reconstructable``, ``n_particles_with_hits``
        (every particle_id > 0 with hits, before any cut), ``n_tracks`` (cluster
        denominator), ``n_submitted_tracks`` (distinct labels >= 0), ``n_perfect``,
        ``n_double_majority``, ``n_lhc_tracks``, ``n_matched_tracks`` (DM-matched
        denominator clusters), ``n_lhc_matched_particles``, ``n_duplicated_particles``.
    """
    table, clusters = _match(
        truth,
        submission,
        particles,
        MatchSettings(definition, pt_min, eta_max, min_layers, pixel_only, min_cluster_size),
    )
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
    *,
    definition: Definition = "trackformers",
    pt_min: float = 0.0,
    eta_max: float = 4.0,
    min_layers: int = 3,
    pixel_only: bool = True,
    min_cluster_size: int = 3,
) -> pd.DataFrame:
    """Perfect and double-majority efficiency binned in the particles' pT or eta.

    Parameters
    ----------
    truth, submission, particles, definition, pt_min, eta_max, min_layers, pixel_only,
    min_cluster_size
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
    table, _ = _match(
        truth,
        submission,
        particles,
        MatchSettings(definition, pt_min, eta_max, min_layers, pixel_only, min_cluster_size),
    )
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


def misassigned_hits(particle_id: np.ndarray, track_id: np.ndarray) -> np.ndarray:
    """Which hits of ONE event sit in the wrong reconstructed track (for event displays).

    A hit of particle p (> 0) in track t is correctly assigned when p is t's majority
    particle (most hits; ties to the smallest particle_id, as everywhere here) and t is
    p's main track (the track holding most of p's hits; ties to the smallest track_id).
    Everything else is misassigned: a hit stolen by another particle's track, a fragment
    split off its particle's main track, or a hit left unassigned (negative label). A
    noise hit (p == 0) is misassigned when it shares a track with any other hit (noise
    should stay alone or unassigned).

    Args:
        particle_id: [n] int true particle of each hit, 0 = noise.
        track_id: [n] predicted track of each hit; equal labels are one track, except
            negative labels: unassigned, in no track (as in the scores).

    Returns:
        [n] bool, True = misassigned.
    """
    particle_id = np.asarray(particle_id)
    track_id = np.asarray(track_id)
    if particle_id.shape != track_id.shape:
        raise ValueError(f"shapes differ: {particle_id.shape} vs {track_id.shape}")
    unassigned = _unassigned(track_id)
    hits = pd.DataFrame({"track_id": track_id, "particle_id": particle_id})
    tracks = hits[~unassigned]
    pairs = tracks.groupby(["track_id", "particle_id"]).size().rename("n").reset_index()
    majority = pairs.sort_values(
        ["track_id", "n", "particle_id"], ascending=[True, False, True]
    ).drop_duplicates("track_id")
    main = pairs.sort_values(
        ["particle_id", "n", "track_id"], ascending=[True, False, True]
    ).drop_duplicates("particle_id")
    majority_of_track = pd.Series(
        majority["particle_id"].to_numpy(), index=majority["track_id"].to_numpy()
    )
    main_of_particle = pd.Series(main["track_id"].to_numpy(), index=main["particle_id"].to_numpy())
    # reindex: an unassigned hit's label, or a particle with no assigned hit, finds NaN,
    # which equals nothing, so such hits are never correct.
    correct = (majority_of_track.reindex(track_id).to_numpy() == particle_id) & (
        main_of_particle.reindex(particle_id).to_numpy() == track_id
    )
    track_size = hits.groupby("track_id")["track_id"].transform("size").to_numpy()
    noise = particle_id == 0
    return np.where(noise, (track_size > 1) & ~unassigned, ~correct)
