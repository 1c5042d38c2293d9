"""Benchmark: TrackML scoring, ours against trackml-library's and a per-track loop.

For seeded synthetic events of 10,000 and 100,000 hits (``make_event``: about 10 hits per
particle, 10 % noise, a realistically imperfect assignment), once with compact integer
ids and once with TrackML-like 60-bit particle ids and track labels, it checks that
:func:`evaluation.scoring.score_event`, the general multi-event path
(:func:`evaluation.scoring.score_per_event`), trackml-library's ``score_event`` and the
loop below agree, times each (interleaved, median of several runs; input checks
included in ours) and writes ``benchmarks/results_scoring.md``.

trackml-library is not on PyPI (the PyPI package named ``trackml`` is an unrelated
template) and no copy of it is shipped here: it is timed where it is importable, from an
installed package or from a checkout given with ``--trackml-library`` (LAL/trackml-library
on GitHub; results_scoring.md was measured with its version 3, commit 53a165e); otherwise
its column says it was unavailable.

Run from the repository root::

    .venv/bin/python -m benchmarks.scoring --trackml-library /path/to/trackml-library
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.scoring import score_event, score_per_event

RESULTS = Path(__file__).with_name("results_scoring.md")


def make_event(
    n_hits: int = 100_000,
    mean_hits_per_particle: int = 10,
    noise_fraction: float = 0.10,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic event and an imperfect reconstruction of it.

    Returns
    -------
    truth : DataFrame
        ``hit_id`` (int, shuffled 1..n_hits), ``particle_id`` (int, 0 = noise),
        ``weight`` (float, uniform for particle hits, 0 for noise, summing to 1).
    submission : DataFrame
        ``hit_id, track_id``: the truth assignment with 5 % of particles split in two,
        3 % merged into another particle's track, 5 % of particle hits moved to a random
        track, and noise hits mostly as singletons (30 % stuck onto random tracks).
    """
    rng = np.random.default_rng(seed)
    n_signal = int(n_hits * (1 - noise_fraction))
    n_particles = n_signal // mean_hits_per_particle
    # Every particle gets its hits from a multinomial share: about mean_hits each.
    sizes = rng.multinomial(n_signal, np.full(n_particles, 1 / n_particles))
    particle_id = np.concatenate(
        [np.repeat(np.arange(1, n_particles + 1), sizes), np.zeros(n_hits - n_signal, int)]
    )
    weight = np.where(particle_id > 0, rng.uniform(0.5, 1.5, n_hits), 0.0)
    weight /= weight.sum()
    track_id = particle_id.copy()
    signal = particle_id > 0

    # Split 5 % of particles: their hits past a random position go to a new track.
    split = rng.random(n_particles + 1) < 0.05
    position = rng.random(n_hits)
    moved = signal & split[particle_id] & (position > rng.random(n_particles + 1)[particle_id])
    track_id[moved] += n_particles + 1
    # Merge 3 % of particles into the track of another random particle.
    target = np.arange(n_particles + 1)
    merge = rng.random(n_particles + 1) < 0.03
    merge[0] = False
    target[merge] = rng.integers(1, n_particles + 1, merge.sum())
    track_id[signal & ~moved] = target[track_id[signal & ~moved]]
    # Move 5 % of particle hits to a random existing track.
    stray = signal & (rng.random(n_hits) < 0.05)
    track_id[stray] = rng.integers(1, n_particles + 1, stray.sum())
    # Noise: 70 % singletons (fresh ids), 30 % attached to random tracks.
    noise = ~signal
    singleton = noise & (rng.random(n_hits) < 0.7)
    track_id[singleton] = 3 * (n_particles + 1) + np.arange(singleton.sum())
    attached = noise & ~singleton
    track_id[attached] = rng.integers(1, n_particles + 1, attached.sum())

    hit_id = rng.permutation(n_hits) + 1
    truth = pd.DataFrame({"hit_id": hit_id, "particle_id": particle_id, "weight": weight})
    submission = pd.DataFrame({"hit_id": hit_id, "track_id": track_id})
    # Shuffle the submission rows too: the scorer must not rely on row order.
    return truth, submission.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def score_event_loop(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Baseline: the TrackML score with dictionaries and one Python loop per track."""
    particle_of = dict(zip(truth["hit_id"], truth["particle_id"], strict=True))
    weight_of = dict(zip(truth["hit_id"], truth["weight"], strict=True))
    particle_nhits = Counter(truth["particle_id"])
    hits_of_track: dict[int, list[int]] = defaultdict(list)
    for hit, track in zip(submission["hit_id"], submission["track_id"], strict=True):
        hits_of_track[track].append(hit)
    good_weight = 0.0
    for hits in hits_of_track.values():
        counts = Counter(particle_of[h] for h in hits)
        # Majority particle; ties to the smallest id (irrelevant: a tie is never > 50 %).
        particle, n = max(counts.items(), key=lambda item: (item[1], -item[0]))
        if n > 0.5 * len(hits) and n > 0.5 * particle_nhits[particle]:
            good_weight += sum(weight_of[h] for h in hits if particle_of[h] == particle)
    return good_weight / sum(weight_of.values())


def with_sparse_ids(
    truth: pd.DataFrame, submission: pd.DataFrame, seed: int = 0, tracks_too: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same event with every particle id replaced by a distinct random 60-bit integer
    (noise keeps 0), as TrackML's particle ids are, so that no particle id can serve as
    its own array index and ours takes its hashed path; ``tracks_too`` does the same to
    the track labels (a tracker's labels are usually small: HDBSCAN's are 0..k)."""
    rng = np.random.default_rng(seed)
    particles, particle_codes = np.unique(truth["particle_id"], return_inverse=True)
    tracks, track_codes = np.unique(submission["track_id"], return_inverse=True)
    ids = rng.choice(2**60, len(particles) + len(tracks), replace=False) + 1
    truth = truth.assign(
        particle_id=np.where(particles > 0, ids[: len(particles)], 0)[particle_codes]
    )
    if tracks_too:
        submission = submission.assign(track_id=ids[len(particles) :][track_codes])
    return truth, submission


def load_trackml_score(path: Path | None) -> tuple[Callable | None, str]:
    """trackml-library's ``score_event`` and where it came from, or (None, why not)."""
    if path is not None:
        if not (path / "trackml" / "score.py").is_file():
            return None, f"not found: {path} has no trackml/score.py"
        sys.path.insert(0, str(path))
    try:
        module = importlib.import_module("trackml.score")
    except ImportError:
        return None, "unavailable (not installed; pass --trackml-library CHECKOUT)"
    function = getattr(module, "score_event", None)
    if function is None:
        return None, f"unavailable ({module.__file__} has no score_event)"
    where = "the checkout given with --trackml-library" if path else "the installed package"
    return function, f"trackml-library, {where}"


def interleaved_median_ms(
    functions: dict[str, Callable[[], object]], repeats: dict[str, int]
) -> dict[str, tuple[float, float]]:
    """(median wall time, median CPU time of this process) in ms of each function.

    The calls are interleaved round by round, so that a varying load on a shared machine
    hits every scorer alike; each timed call follows an untimed call of the same function
    on the same event (warm caches for every scorer alike, not the caches the previous
    scorer left). The CPU time (``time.process_time``) leaves out the time other
    processes held the cores.
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in functions}
    for round_ in range(max(repeats.values())):
        for name, function in functions.items():
            if round_ < repeats[name]:
                function()
                wall, cpu = time.perf_counter(), time.process_time()
                function()
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (
            1e3 * statistics.median(w for w, _ in values),
            1e3 * statistics.median(c for _, c in values),
        )
        for name, values in times.items()
    }


def time_case(
    truth: pd.DataFrame,
    submission: pd.DataFrame,
    ids: str,
    library: Callable | None,
    args: argparse.Namespace,
) -> str:
    """Check that every scorer agrees on one event, time them; one markdown table row."""
    with_event = truth.assign(event_id=0), submission.assign(event_id=0)
    scorers: dict[str, Callable[[], object]] = {
        "ours": partial(score_event, truth, submission),
        "general": partial(score_per_event, *with_event),
        "loop": partial(score_event_loop, truth, submission),
    }
    if library is not None:
        scorers["library"] = partial(library, truth, submission)
    values = {name: float(np.asarray(f()).ravel()[0]) for name, f in scorers.items()}
    for name, value in values.items():
        assert math.isclose(value, values["ours"], rel_tol=1e-9), (name, values)
    repeats = {name: args.repeats for name in ("ours", "general")}
    repeats.update({name: args.slow_repeats for name in ("loop", "library")})
    ms = interleaved_median_ms(scorers, repeats)

    def cell(name: str, digits: int) -> str:
        return f"{ms[name][0]:.{digits}f} ({ms[name][1]:.{digits}f})" if name in ms else "n/a"

    def ratio(name: str) -> str:
        if name not in ms:
            return "n/a"
        return f"{ms[name][0] / ms['ours'][0]:.1f}x ({ms[name][1] / ms['ours'][1]:.1f}x)"

    return (
        f"| {len(truth):,} | {ids} | {submission['track_id'].nunique():,} | "
        f"{values['ours']:.4f} | {cell('ours', 2)} | {cell('general', 2)} | "
        f"{cell('library', 1)} | {cell('loop', 1)} | {ratio('library')} | {ratio('loop')} |"
    )


def main() -> None:
    """Check agreement, time every scorer and write the markdown results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-hits", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=21, help="runs of ours")
    parser.add_argument("--slow-repeats", type=int, default=5, help="library and loop runs")
    parser.add_argument("--trackml-library", type=Path, help="checkout of trackml-library")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    print(f"config: {vars(args)}")
    library, library_source = load_trackml_score(args.trackml_library)

    header = (
        "| hits | ids | tracks | score | ours ms | general path ms | trackml-library ms | "
        "loop ms | library / ours | loop / ours |"
    )
    rows = [header, "|" + "---|" * header.count(" | ") + "---|"]
    load_before = os.getloadavg()
    for n_hits in args.n_hits:
        for ids in ("compact", "60-bit particle ids", "60-bit particle ids and labels"):
            truth, submission = make_event(n_hits)
            if ids != "compact":
                truth, submission = with_sparse_ids(truth, submission, tracks_too="labels" in ids)
            rows.append(time_case(truth, submission, ids, library, args))
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    machine = platform.processor() or platform.machine()
    command = (
        "python -m benchmarks.scoring"
        + (" --trackml-library CHECKOUT" if args.trackml_library else "")
        + f" --n-hits {' '.join(map(str, args.n_hits))} --repeats {args.repeats}"
        + f" --slow-repeats {args.slow_repeats}"
    )
    text = "\n".join(
        [
            "# TrackML scoring benchmark",
            "",
            "Milliseconds per event: median wall-clock time (median CPU time of the "
            "process in brackets, which leaves out the time other work held the cores). "
            "**ours**: `evaluation.scoring.score_event` (input "
            "checks included); **general path**: `score_per_event` on the same event "
            "(the multi-event pandas path, also what reports bad input); "
            f"**trackml-library**: its own `score_event` ({library_source}; not shipped "
            "here); **loop**: `score_event_loop` in `benchmarks/scoring.py`, one Python "
            "loop per track. Seeded synthetic events of `make_event` (about 10 hits per "
            "particle, 10 % noise, imperfect assignment), with compact integer ids, with "
            "random 60-bit particle ids (as TrackML's, which ours then hashes) and with "
            "60-bit track labels too (two columns hashed). All scorers give the same "
            "score (asserted). "
            f"Medians of {args.repeats} (ours, general path) and {args.slow_repeats} "
            "(library, loop) runs, interleaved round by round, each after an untimed call of "
            "the same scorer.",
            "",
            *rows,
            "",
            f"Machine: {machine}, {os.cpu_count()} CPUs, SHARED with other work while "
            f"measured (load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
            "after): wall times are noisy and short calls suffer most (cache and scheduling), so "
            "the CPU-time ratios are the steadier comparison. "
            f"Python {platform.python_version()}, pandas {pd.__version__}, "
            f"numpy {np.__version__}. Command: `{command}`.",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
