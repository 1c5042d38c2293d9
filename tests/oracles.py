"""Hand-built events and an exact "oracle" model shared by several test modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from custom_encoder import AttentionLayout
from data_processing.dataset import EventSet, Normaliser


class DirectionOracle(nn.Module):
    """A 'refiner' that predicts every hit's true parameters on straight tracks.

    For a straight track from the origin the hit direction IS the track direction, so
    (theta, sin phi, cos phi) of the hit position are the exact linear targets.
    """

    def __init__(self, normaliser: Normaliser) -> None:
        super().__init__()
        self.normaliser = normaliser

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        norm = self.normaliser
        xyz = x * torch.as_tensor(norm.input_std, dtype=x.dtype) + torch.as_tensor(
            norm.input_mean, dtype=x.dtype
        )
        theta = torch.atan2(torch.hypot(xyz[..., 0], xyz[..., 1]), xyz[..., 2])
        phi = torch.atan2(xyz[..., 1], xyz[..., 0])
        params = torch.stack([theta, torch.sin(phi), torch.cos(phi)], dim=-1)
        mean = torch.as_tensor(norm.target_mean, dtype=x.dtype)
        return (params - mean) / torch.as_tensor(norm.target_std, dtype=x.dtype)


def straight_track_event(directions: dict[int, tuple[float, float]], hits: int = 8) -> EventSet:
    """One event of straight tracks: particle -> (theta, phi); hits at r = 1..hits."""
    radius = 1.0 + np.arange(hits)
    frames = []
    for particle, (theta, phi) in directions.items():
        frames.append(
            pd.DataFrame(
                {
                    "event_id": 0,
                    "particle_id": particle,
                    "x": radius * np.sin(theta) * np.cos(phi),
                    "y": radius * np.sin(theta) * np.sin(phi),
                    "z": radius * np.cos(theta),
                    "theta": theta,
                    "sin_phi": np.sin(phi),
                    "cos_phi": np.cos(phi),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table["hit_id"] = np.arange(len(table))
    table["weight"] = 1.0
    return EventSet.from_table(table, ("x", "y", "z"), ("theta", "sin_phi", "cos_phi"))


# ---------------------------------------------------------------------------------------
# Scoring oracles: the rules written out as plain loops over hits and tracks, sharing no
# code with evaluation/scoring.py or evaluation/efficiencies.py.
# ---------------------------------------------------------------------------------------


def _tracks_of(particle_ids: Sequence[int], track_ids: Sequence[int]) -> dict[int, list[int]]:
    """{label: particle id of each of its hits}, negative labels (unassigned) left out."""
    tracks: dict[int, list[int]] = {}
    for particle, track in zip(particle_ids, track_ids, strict=True):
        if track >= 0:
            tracks.setdefault(int(track), []).append(int(particle))
    return tracks


def _hits_per_particle(particle_ids: Sequence[int]) -> dict[int, int]:
    """{particle id: its number of hits} (noise, particle 0, included)."""
    counts: dict[int, int] = {}
    for particle in particle_ids:
        counts[int(particle)] = counts.get(int(particle), 0) + 1
    return counts


def _majority(particles: list[int]) -> tuple[int, int]:
    """(particle with most hits in the list, its hit count); ties to the smallest id."""
    counts: dict[int, int] = {}
    for particle in particles:
        counts[particle] = counts.get(particle, 0) + 1
    best = min(counts, key=lambda p: (-counts[p], p))
    return best, counts[best]


def _rates(
    perfect: int, double_majority: int, lhc: int, n_particles: int, n_tracks: int
) -> dict[str, float]:
    """The efficiency dict of the oracles from their counts."""
    return {
        "perfect": perfect / n_particles,
        "double_majority": double_majority / n_particles,
        "lhc": lhc / n_tracks,
        "n_particles": n_particles,
        "n_tracks": n_tracks,
    }


def trackml_score_oracle(
    particle_ids: Sequence[int], track_ids: Sequence[int], weights: Sequence[float]
) -> float:
    """TrackML score of one event (SPEC section 5), one loop over tracks.

    Noise (particle 0) weighs 0; negative labels are in no track.
    """
    particle_nhits = _hits_per_particle(particle_ids)
    weight_of = [0.0 if p == 0 else float(w) for p, w in zip(particle_ids, weights, strict=True)]
    members: dict[int, list[int]] = {}
    for hit, track in enumerate(track_ids):
        if track >= 0:
            members.setdefault(int(track), []).append(hit)
    good = 0.0
    for hits in members.values():
        particle, n = _majority([int(particle_ids[h]) for h in hits])
        if 2 * n > len(hits) and 2 * n > particle_nhits[particle]:
            good += sum(weight_of[h] for h in hits if particle_ids[h] == particle)
    return good / sum(weight_of)


def published_efficiencies_oracle(
    particle_ids: Sequence[int], track_ids: Sequence[int], min_hits: int = 3
) -> dict[str, float]:
    """The published ("trackformers") perfect, DM and LHC efficiencies of one event.

    Every submitted track (label >= 0) is counted, whatever its size; a track matches
    only with at least ``min_hits`` hits, through its majority particle (never noise,
    id 0). Perfect and DM are counted over tracks and divided by the number of distinct
    particle ids > 0 in the truth; LHC is divided by the number of submitted tracks.
    """
    particle_nhits = _hits_per_particle(particle_ids)
    n_particles = sum(1 for p in particle_nhits if p != 0)
    tracks = _tracks_of(particle_ids, track_ids)
    perfect = double_majority = lhc = 0
    for particles in tracks.values():
        particle, n = _majority(particles)
        if len(particles) < min_hits or particle == 0:
            continue
        purity = n / len(particles)
        perfect += n == particle_nhits[particle] and purity > 0.99
        double_majority += purity > 0.5 and n / particle_nhits[particle] > 0.5
        lhc += purity > 0.75
    return _rates(perfect, double_majority, lhc, n_particles, len(tracks))


def min_hits_efficiencies_oracle(
    particle_ids: Sequence[int], track_ids: Sequence[int], min_hits: int = 3
) -> dict[str, float]:
    """The project variant ("trackformers_min_hits"): as the published oracle, but only
    particles with at least ``min_hits`` hits and tracks of at least ``min_hits`` hits are
    in the denominators (and perfect / DM count denominator particles only)."""
    particle_nhits = _hits_per_particle(particle_ids)
    n_particles = sum(1 for p, n in particle_nhits.items() if p != 0 and n >= min_hits)
    tracks = [t for t in _tracks_of(particle_ids, track_ids).values() if len(t) >= min_hits]
    perfect = double_majority = lhc = 0
    for particles in tracks:
        particle, n = _majority(particles)
        if particle == 0:
            continue
        purity = n / len(particles)
        lhc += purity > 0.75
        # Perfect and DM count particles of the denominator only (a 3-hit track holding
        # both hits of a 2-hit particle is a DM match of a particle that is not counted).
        if particle_nhits[particle] >= min_hits:
            perfect += n == particle_nhits[particle] and purity > 0.99
            double_majority += purity > 0.5 and n / particle_nhits[particle] > 0.5
    return _rates(perfect, double_majority, lhc, n_particles, len(tracks))


def unassign_fraction(track_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Copy of ``track_ids`` with ``round(fraction * n)`` hits, drawn without replacement
    by a seeded generator, set to -1 (unassigned: in no track)."""
    rng = np.random.default_rng(seed)
    corrupted = np.array(track_ids, copy=True)
    corrupted[rng.choice(len(corrupted), round(fraction * len(corrupted)), replace=False)] = -1
    return corrupted
