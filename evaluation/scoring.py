"""TrackML score of a hit -> track assignment, and the hit-level checks every metric shares.

Every function here compares two per-hit tables:

* ``truth``: one row per hit with ``hit_id`` and ``particle_id`` (int; 0 = noise) and, for
  the score, ``weight`` (float, >= 0). Noise (particle 0) weighs 0 in the score whatever
  its ``weight`` says (SPEC section 5; TrackML's files already give it 0, REDVID's give
  every hit 1, so there track hits weigh 1 and noise 0).
* ``submission``: one row per hit with ``hit_id`` and ``track_id`` (any labels, only
  equality matters), except that a NEGATIVE numeric label (HDBSCAN's -1 under
  ``--noise unassigned``) means "unassigned": the hit is in no track, for the score and
  for every efficiency definition, however many hits share that label.

Every truth hit must appear exactly once in the submission, as in trackml-library's
``score_event``. With an ``event_id`` column in both frames, hit ids only need to be unique
within an event and all events are handled in one vectorised pass.

The metrics work on the table of (event, track, particle) pairs (:func:`count_pairs`):
how many hits of particle p track t holds, next to the size of t and the hit count of p.
Every criterion asks for a fraction strictly above 50 %, so at most one particle per
track can pass it, and that particle is necessarily the track's majority particle. Hence
the criteria can be read directly off the pairs, and the tie-breaking of the majority
particle cannot change the score or whether a track matches a particle.

The efficiencies (perfect, double majority, LHC) live in :mod:`evaluation.efficiencies`,
which builds on :func:`align_events`, :func:`join_hits` and :func:`count_pairs` here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "align_events",
    "count_pairs",
    "join_hits",
    "misassigned_hits",
    "pair_table",
    "require_columns",
    "score_event",
    "score_per_event",
    "unassigned_labels",
]

EVENT = "event_id"
#: How many offending ids an error message lists (it also gives their total count).
MAX_IDS_SHOWN = 5


# --------------------------------------------------------------------------------------
# Input checks and joining truth with submission
# --------------------------------------------------------------------------------------


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
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
    shown = bad.head(MAX_IDS_SHOWN)
    if frame[EVENT].nunique() > 1:
        items = [f"(event {e}, hit {h})" for e, h in shown.itertuples(index=False)]
        return f"(event_id, hit_id) {', '.join(items)} ({len(bad)} in all)"
    return f"hit_id {', '.join(str(h) for h in shown['hit_id'])} ({len(bad)} in all)"


def align_events(
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
    require_columns(truth, ["hit_id", *truth_columns], "truth")
    require_columns(submission, ["hit_id", "track_id"], "submission")
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
                f"(e.g. {list(values[:MAX_IDS_SHOWN])}); give both frames an event_id column"
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


def join_hits(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """Check the two aligned frames hit by hit and join them.

    Inputs are the outputs of :func:`align_events`. Raises ValueError (naming some
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


def unassigned_labels(track_id: np.ndarray) -> np.ndarray:
    """[n] bool: which labels mean "in no track" (negative numbers; see the module doc).

    Non-numeric labels (strings) cannot be negative: they are all tracks.
    """
    track_id = np.asarray(track_id)
    if np.issubdtype(track_id.dtype, np.number):
        return track_id < 0
    return np.zeros(track_id.shape, dtype=bool)


def count_pairs(hits: pd.DataFrame) -> pd.DataFrame:
    """Count the hits of every (event, track, particle) pair of joined hits.

    Input: the output of :func:`join_hits` (``event_id, track_id, particle_id`` and
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
        weight = _noise_free_weight(
            hits["particle_id"].to_numpy(), hits["weight"].to_numpy(dtype=float)
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
        :func:`score_event` and :func:`evaluation.efficiencies.efficiencies` for how
        they count).
    """
    columns = ["particle_id", *(["weight"] if "weight" in truth.columns else [])]
    pairs = count_pairs(join_hits(*align_events(truth, submission, columns, False)))
    pairs["purity"] = pairs["n_hits"] / pairs["track_nhits"]
    pairs["completeness"] = pairs["n_hits"] / pairs["particle_nhits"]
    return pairs


# --------------------------------------------------------------------------------------
# TrackML score
# --------------------------------------------------------------------------------------


def _good_and_total_weight(
    event: np.ndarray | None,
    n_events: int,
    track: tuple[np.ndarray, int],
    particle: tuple[np.ndarray, int],
    weight: np.ndarray,
    unassigned: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Credited and total truth weight of every event, from integer codes of the hits.

    Args:
        event: [n] int event code in [0, n_events) of each hit; None: one event.
        track, particle: ([n] int codes in [0, n_codes), n_codes), distinct for distinct
            (event, track_id) / (event, particle_id); need not be dense (codes up to a
            few times n cost only longer tables).
        weight: [n] float weight, noise already 0.
        unassigned: [n] bool, hits with a negative label (in no track); None: none.

    Returns:
        ([n_events] credited weight, [n_events] total weight), both summing the same
        per-hit weights in the same order (uncredited as 0): truth gets exactly 1.0.
    """
    (track, n_tracks), (particle, n_particles) = track, particle
    # One integer key per hit for its (track, particle) pair: sorting the keys groups the
    # pairs, and the run lengths are their hit counts (no hashing, no pandas). int32 keys
    # when they fit: they sort in half the time of int64 ones.
    key_type = np.int32 if n_tracks * n_particles < 2**31 else np.int64
    # Same-type operands: mixed int32/int64 loops cast element by element.
    particle = particle.astype(key_type, copy=False)
    keys = track.astype(key_type)
    keys *= n_particles
    keys += particle
    keys.sort()
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    pair_nhits = np.diff(np.append(starts, len(keys)))
    pair_track, pair_particle = np.divmod(keys[starts], n_particles)
    # Track and particle sizes summed over the (fewer) pairs rather than over the hits.
    track_nhits = np.bincount(pair_track, weights=pair_nhits, minlength=n_tracks)
    particle_nhits = np.bincount(pair_particle, weights=pair_nhits, minlength=n_particles)
    # Good pair: > 50 % of the track and > 50 % of the particle, both strictly (exactly
    # half is not good, as in trackml-library). At most one per track can pass.
    good = (2 * pair_nhits > track_nhits[pair_track]) & (
        2 * pair_nhits > particle_nhits[pair_particle]
    )
    good_particle_of_track = np.full(n_tracks, -1, dtype=keys.dtype)
    good_particle_of_track[pair_track[good]] = pair_particle[good]
    credited = good_particle_of_track[track] == particle
    if unassigned is not None:
        # Unassigned hits are in no track: never credited, however many share -1.
        credited &= ~unassigned
    # weight * True is weight exactly and weight * False is 0 (weights are finite).
    credited_weight = weight * credited
    if event is None:
        return np.array([credited_weight.sum()]), np.array([weight.sum()])
    total = np.bincount(event, weights=weight, minlength=n_events)
    return np.bincount(event, weights=credited_weight, minlength=n_events), total


def _noise_free_weight(particle_id: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[n] float weight, noise (particle_id 0) set to 0 (SPEC; REDVID files give it 1, and
    a noise hit must not earn credit for sharing a track with others)."""
    return np.where(particle_id == 0, 0.0, weight)


def _scores(hits: pd.DataFrame) -> pd.Series:
    """TrackML score of every event of joined hits, as a Series indexed by event_id."""
    if hits.empty:
        # Otherwise an empty Series comes back and score_event fails on an IndexError.
        raise ValueError("no hits to score: truth and submission are both empty")
    event_id = hits[EVENT].to_numpy()
    event, n_events = _dense_codes(event_id)
    particle_id = hits["particle_id"].to_numpy()
    weight = _noise_free_weight(particle_id, hits["weight"].to_numpy(dtype=float))
    good_weight, total = _good_and_total_weight(
        event,
        n_events,
        _dense_codes(event_id, hits["track_id"].to_numpy()),
        _dense_codes(event_id, particle_id),
        weight,
        unassigned_labels(hits["track_id"].to_numpy()),
    )
    representative = np.empty(n_events, dtype=np.int64)
    representative[event] = np.arange(len(hits))
    event_ids = hits[EVENT].iloc[representative]
    _check_total(total, event_ids.to_numpy())
    scores = pd.Series(good_weight / total, index=pd.Index(event_ids, name=EVENT), name="score")
    return scores.sort_index()


def _check_total(total: np.ndarray, event_ids: np.ndarray) -> None:
    """Raise ValueError naming the events whose total truth weight is 0."""
    empty = total <= 0
    if empty.any():
        raise ValueError(
            f"total truth weight is 0 in event(s) {list(event_ids[empty][:MAX_IDS_SHOWN])}"
            " (noise, particle_id 0, always weighs 0): the score is undefined"
        )


# ------------------------------------------- the one-event fast path of score_event ----

#: Integer ids spanning at most this many times their count (+1024) are codes as they are.
_COMPACT_SPAN = 4


def _integer_column(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """The column as a numpy integer array, or None (absent, float, nullable, strings)."""
    if column not in frame.columns:
        return None
    values = frame[column].to_numpy()
    return values if values.dtype.kind in "iu" else None


def _offsets(values: np.ndarray, low: int, high: int) -> tuple[np.ndarray, int] | None:
    """(ids in [low, high] as offsets >= 0, table size), or None when the range is wider
    than a few times the ids' count. Ids >= 0 are their own offsets (no copy)."""
    if high - low >= _COMPACT_SPAN * len(values) + 1024 or high >= 2**62:
        return None
    if low >= 0:
        return values, high + 1
    return values.astype(np.int64) - low, high - low + 1


def _codes(values: np.ndarray) -> tuple[tuple[np.ndarray, int], bool]:
    """((codes, n_codes), any negative id) of integer ids; equal ids, equal codes.

    Compact ids (TrackML hit ids, HDBSCAN labels) are offsets into a table; widely spread
    ones (TrackML's 64-bit particle ids) are hashed by ``pd.factorize``.
    """
    low, high = int(values.min()), int(values.max())
    offsets = _offsets(values, low, high)
    if offsets is None:
        codes, uniques = pd.factorize(values)
        offsets = codes, len(uniques)
    return offsets, low < 0


def _single_event(frame: pd.DataFrame) -> int | None:
    """The one integer event_id of ``frame`` (0 without the column), else None."""
    if EVENT not in frame.columns:
        return 0
    events = _integer_column(frame, EVENT)
    if events is None or len(events) == 0 or events.min() != events.max():
        return None
    return int(events[0])


def _submitted_row(truth_hits: np.ndarray, submission_hits: np.ndarray) -> np.ndarray | None:
    """[n] row of the submission holding each truth hit, or None.

    None when the ids are too spread out for a table, or when not every truth hit is
    submitted exactly once with nothing else (equal lengths are the caller's check).
    """
    if np.array_equal(truth_hits, submission_hits):
        # One event table gave both frames: no join, only distinct ids to check.
        row = np.arange(len(truth_hits), dtype=np.int32)
        if len(row) < 2 or (truth_hits[1:] > truth_hits[:-1]).all():
            return row
    low = min(int(truth_hits.min()), int(submission_hits.min()))
    high = max(int(truth_hits.max()), int(submission_hits.max()))
    truth_slot = _offsets(truth_hits, low, high)
    submission_slot = _offsets(submission_hits, low, high)
    if truth_slot is None or submission_slot is None:
        return None
    # Hit ids as offsets into one int32 table: the join is a scatter and a gather.
    row_of_slot = np.full(truth_slot[1], -1, dtype=np.int32)
    row_of_slot[submission_slot[0]] = np.arange(len(submission_hits), dtype=np.int32)
    row = row_of_slot[truth_slot[0]]
    # Every truth hit finds a distinct submitted row and every row is found: no hit is
    # missing, extra or duplicated in either frame.
    if row.min() < 0:
        return None
    seen = np.zeros(len(row), dtype=bool)
    seen[row] = True
    return row if seen.all() else None


def _fast_score_event(truth: pd.DataFrame, submission: pd.DataFrame) -> float | None:
    """The score of one event of integer ids by array passes only, or None.

    None means "not this path": a missing column, non-integer or widely spread hit ids,
    non-integer labels or particle ids, several or disagreeing event ids, or any input
    the checks of :func:`join_hits` / :func:`_scores` refuse (bad weight, duplicated,
    missing or extra hits, no hits, zero total weight). The caller then takes the
    general path, which scores the same inputs or raises the message naming the hits.
    """
    truth_hits, submission_hits = (
        _integer_column(truth, "hit_id"),
        _integer_column(submission, "hit_id"),
    )
    particle_id, track_id = (
        _integer_column(truth, "particle_id"),
        _integer_column(submission, "track_id"),
    )
    if truth_hits is None or particle_id is None or submission_hits is None or track_id is None:
        return None
    n_hits = len(truth_hits)
    if n_hits == 0 or len(submission_hits) != n_hits or "weight" not in truth.columns:
        return None
    events = (_single_event(truth), _single_event(submission))
    if None in events or (EVENT in truth and EVENT in submission and events[0] != events[1]):
        return None
    weight = truth["weight"].to_numpy(dtype=float)
    # Two reductions, no temporary: NaN fails the first test, +inf the second.
    if not (weight.min() >= 0 and weight.max() < np.inf):
        return None
    row = _submitted_row(truth_hits, submission_hits)
    if row is None:
        return None
    track_id = track_id[row]
    track_codes, any_unassigned = _codes(track_id)
    good_weight, total = _good_and_total_weight(
        None,
        1,
        track_codes,
        _codes(particle_id)[0],
        _noise_free_weight(particle_id, weight),
        track_id < 0 if any_unassigned else None,
    )
    if total[0] <= 0:
        return None
    return float(good_weight[0] / total[0])


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
    fast = _fast_score_event(truth, submission)
    if fast is not None:
        return fast
    truth, submission = align_events(truth, submission, ["particle_id", "weight"], False)
    for frame, name in ((truth, "truth"), (submission, "submission")):
        events = pd.unique(frame[EVENT])
        if len(events) > 1:
            raise ValueError(
                f"score_event scores one event but {name} holds {len(events)} event_ids "
                f"(e.g. {list(events[:MAX_IDS_SHOWN])}); use score_per_event"
            )
    return float(_scores(join_hits(truth, submission)).iloc[0])


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
    truth, submission = align_events(truth, submission, ["particle_id", "weight"], True)
    return _scores(join_hits(truth, submission))


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
    unassigned = unassigned_labels(track_id)
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
