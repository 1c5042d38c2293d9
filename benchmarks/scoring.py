"""Benchmark: vectorised TrackML scoring against a per-track Python loop.

Builds a seeded synthetic 100k-hit event (about 9,000 particles of about 10 hits plus 10 %
noise, with a realistically imperfect track assignment), checks that
:func:`evaluation.scoring.score_event` and the loop below agree, times both (median of
several runs) and writes ``benchmarks/results_scoring.md``.

Run from the repository root::

    .venv/bin/python -m benchmarks.scoring
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.scoring import score_event

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


def median_ms(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    """Check agreement, time both scorers and write the markdown results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-hits", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loop-repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    truth, submission = make_event(args.n_hits)
    fast = score_event(truth, submission)
    slow = score_event_loop(truth, submission)
    assert math.isclose(fast, slow, rel_tol=1e-9), (fast, slow)

    vectorised_ms = median_ms(lambda: score_event(truth, submission), args.repeats)
    loop_ms = median_ms(lambda: score_event_loop(truth, submission), args.loop_repeats)
    machine = platform.processor() or platform.machine()
    rows = [
        "| machine | n_hits | n_tracks | score | vectorised ms | loop ms | loop / vectorised |",
        "|---|---|---|---|---|---|---|",
        f"| {machine}, {os.cpu_count()} CPUs | {len(truth):,} | "
        f"{submission['track_id'].nunique():,} | {fast:.4f} | {vectorised_ms:.1f} | "
        f"{loop_ms:.1f} | {loop_ms / vectorised_ms:.1f}x |",
    ]
    text = "\n".join(
        [
            "# TrackML scoring benchmark",
            "",
            "`evaluation.scoring.score_event` (pandas/numpy, input checks included) against "
            "a per-track Python loop (`score_event_loop` in `benchmarks/scoring.py`), on "
            f"the seeded synthetic event of `make_event` ({len(truth):,} hits, "
            f"{truth.loc[truth.particle_id > 0, 'particle_id'].nunique():,} particles, "
            f"{(truth.particle_id == 0).mean():.0%} noise, imperfect assignment). Both give "
            "the same score "
            f"(asserted). Median of {args.repeats} (vectorised) and {args.loop_repeats} "
            "(loop) runs.",
            "",
            *rows,
            "",
            f"Python {platform.python_version()}, pandas {pd.__version__}, "
            f"numpy {np.__version__}. Command: `python -m benchmarks.scoring "
            f"--n-hits {args.n_hits} --repeats {args.repeats} "
            f"--loop-repeats {args.loop_repeats}`.",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
