"""Transport of many particles at once through the TrackML detector (the simulator's core).

All live particles are stepped together with ``trackml_field.rk4_step`` (the loop runs
over steps, never over particles). After each step, the chord of every step segment is
matched against the layer bands it overlaps (``trackml_geometry.layer_pairs``), the
candidate modules of those layers are looked up, and each (segment, module) pair is
intersected exactly: the path inside the step is the cubic Hermite curve through both
ends' positions and directions (accurate to micrometres on a helix arc), solved for the
module's mid-plane by Newton iterations and checked against the module's rectangle or
trapezoid. Overlapping modules therefore give the real double hits, and loopers that cross
a layer again give further hits.

Material effects at every crossed module (each switchable):

* multiple scattering, Highland formula theta0 = 13.6 MeV / (beta c p) z sqrt(x)
  (1 + 0.038 ln(x z^2 / beta^2)), x = the module's x/X0 (calibrated per volume, see
  ``X_OVER_X0``) over the cosine of the incidence angle; two Gaussian angles of width
  theta0 kick the direction, and the end of the step is moved by the kick times the path
  left in the step (a kink at the crossing, to first order);
* mean energy loss in the module's silicon (thickness / X0_Si over the incidence cosine),
  36.3 MeV per radiation length (minimum-ionising silicon, dE/dx_min X0 =
  1.664 MeV cm^2/g x 21.82 g/cm^2), pion mass assumed.

* the particle ends at a crossing with probability ``interaction_probability`` +
  ``interactions_per_x0`` x (x/X0 crossed) (hadronic interactions truncate real tracks);
  later crossings in the same step are dropped.

A particle stops when it leaves the tracker (r > R_EXIT_MM or abs(z) > Z_EXIT_MM), has
travelled ``max_path_mm``, has lost its kinetic energy, is a barrel looper that has turned
by ``max_turning_rad`` in the transverse plane (see ``TransportConfig``), or starts moving
back towards the beam line after turning by more than ``stop_inward_after_rad``: the real
truth has almost no such hits (under 6 % of the real sample's low-pT particles have a last
hit 50 mm inside their largest radius), so other particles are followed along their real
path up to the apex of their first turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_processing import trackml_geometry as geo
from data_processing.trackml_field import C_LIGHT, Field, rk4_step, row_cross, step_lengths

R_EXIT_MM = 1100.0
Z_EXIT_MM = 3100.0
PION_MASS_GEV = 0.13957
#: Mean energy lost per radiation length of silicon by a minimum-ionising particle (GeV).
ENERGY_LOSS_PER_X0_GEV = 0.0363
#: Radiation length of silicon (mm). Energy loss uses the module's own silicon thickness,
#: not the effective scattering material below, which also absorbs field-map residuals.
SILICON_X0_MM = 93.7

#: Effective material per module crossing at normal incidence (x/X0), per volume.
#: Calibrated on the real sample event000000001: the space angle between the truth
#: momentum directions at consecutive hits of a particle, after removing the bending the
#: field map explains, has a median of 1.177 theta0 (Rayleigh); x/X0 is the value for which
#: the Highland theta0 of each pair (its momentum, incidence and first-hit volume) matches
#: that median. ``benchmarks/trackml_sim.py`` re-measures these numbers.
#: The short-strip endcap values (12, 14) are far above a module's few per cent: there the
#: estimator also picks up what the field map misses (the ideal transport already shows
#: about 1 mrad), so they are effective values that reproduce the measured angles, not a
#: material budget.
X_OVER_X0 = {
    7: 0.0092,
    8: 0.0067,
    9: 0.013,
    12: 0.137,
    13: 0.0117,
    14: 0.18,
    16: 0.032,
    17: 0.019,
    18: 0.037,
}
#: Probability that a particle ends (nuclear interaction) at a module crossing:
#: DEFAULT_INTERACTION_PROBABILITY + DEFAULT_INTERACTIONS_PER_X0 x (x/X0 crossed). Measured
#: on event 1000 and the real sample: central (abs eta < 1) primaries with pT > 1 GeV leave
#: as many hits as the ideal transport gives them except for a tail of truncated tracks
#: (7.5 % with 8 hits or fewer), and the real sample's tracks miss 5-20 % of the ideal
#: transport's strip-endcap layers but only about 3 % of its pixel layers: losses grow
#: with the material crossed. These two values give about 7.5 % short central tracks and
#: the table's hit total to about 2 %.
DEFAULT_INTERACTION_PROBABILITY = 0.01
DEFAULT_INTERACTIONS_PER_X0 = 0.4


@dataclass(frozen=True)
class TransportConfig:
    """Physics switches and limits of the transport. Lengths in mm, angles in rad.

    ``max_turning_rad`` caps the transverse turning of particles whose direction has
    abs(dz/ds) / (dr_T/ds) below ``turning_cap_max_slope`` (barrel loopers); all others run
    to the apex of their first turn (``stop_inward_after_rad``). Calibrated on event 1000
    and the real sample: barrel loopers followed to the apex leave 15 % too many hits at
    pT 0.15-0.2 GeV and hits near their apex in the long-strip barrel that the real ones
    lack, while a cap on every particle loses the real forward hits of volumes 16 and 18
    (21 % of them without a simulated partner instead of 7 %).
    """

    scattering: bool = True
    energy_loss: bool = True
    max_step_mm: float = 40.0
    max_path_mm: float = 6000.0
    max_turning_rad: float = 2.0
    turning_cap_max_slope: float = 0.5
    stop_inward_after_rad: float = 1.0
    interaction_probability: float = DEFAULT_INTERACTION_PROBABILITY
    interactions_per_x0: float = DEFAULT_INTERACTIONS_PER_X0
    max_steps: int = 5000


@dataclass(frozen=True)
class Crossings:
    """Module crossings, in transport order per particle (K rows).

    ``particle`` [K] index into the transported particles; ``module`` [K] detector module
    index; ``position`` [K, 3] mm on the module mid-plane; ``momentum`` [K, 3] GeV (before
    the module's scattering); ``path`` [K] mm from the vertex.
    """

    particle: np.ndarray
    module: np.ndarray
    position: np.ndarray
    momentum: np.ndarray
    path: np.ndarray


def _hermite(t, p0, d0, p1, d1):
    """Point and tangent [n, 3] at t [n, 1] of the cubic Hermite curve (d scaled by h)."""
    t2, t3 = t * t, t * t * t
    point = (
        (2 * t3 - 3 * t2 + 1) * p0
        + (t3 - 2 * t2 + t) * d0
        + (3 * t2 - 2 * t3) * p1
        + (t3 - t2) * d1
    )
    tangent = (6 * t2 - 6 * t) * (p0 - p1) + (3 * t2 - 4 * t + 1) * d0 + (3 * t2 - 2 * t) * d1
    return point, tangent


def _plane_distance(t, a0, b0, a1, b1):
    """Signed distance (mm) [n] from the plane of the Hermite point at t [n], given the end
    distances a0, a1 [n] and the normal components of the scaled tangents b0, b1 [n]."""
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * a0
        + (t3 - 2 * t2 + t) * b0
        + (3 * t2 - 2 * t3) * a1
        + (t3 - t2) * b1
    )


def intersect_segments(det: geo.Detector, p0, d0, p1, d1, h):
    """Crossings of step segments with the modules they may hit.

    Inputs: segment start/end positions p0, p1 [S, 3] (mm), unit directions d0, d1 [S, 3],
    lengths h [S] (mm). Returns (segment [K], module [K], t [K] in [0, 1), position [K, 3],
    unit direction [K, 3]), sorted by segment then t.
    """
    seg, layer = geo.layer_pairs(det, p0, p1)
    if len(seg) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3))
    pair, module = geo.candidate_modules(det, layer, p0[seg], p1[seg])
    s = seg[pair]
    normal = det.normal[module]
    offset = det.plane_offset[module]
    a0 = np.einsum("ij,ij->i", normal, p0[s]) - offset
    a1 = np.einsum("ij,ij->i", normal, p1[s]) - offset
    keep = np.flatnonzero((a0 == 0) | (np.signbit(a0) != np.signbit(a1)))
    s, module, a0, a1, normal = s[keep], module[keep], a0[keep], a1[keep], normal[keep]
    b0 = np.einsum("ij,ij->i", normal, d0[s]) * h[s]
    b1 = np.einsum("ij,ij->i", normal, d1[s]) * h[s]
    t_chord = a0 / np.where(a0 != a1, a0 - a1, 1.0)
    t = t_chord
    for _ in range(3):  # Newton on the scalar cubic n.(H(t) - c) = 0
        f = _plane_distance(t, a0, b0, a1, b1)
        df = (
            (6 * t * t - 6 * t) * (a0 - a1)
            + (3 * t * t - 4 * t + 1) * b0
            + (3 * t * t - 2 * t) * b1
        )
        t = np.clip(t - f / np.where(np.abs(df) > 1e-12, df, 1e-12), 0.0, 1.0)
    # Newton fails only on near-tangent crossings; there the chord's root is the fallback.
    t = np.where(np.abs(_plane_distance(t, a0, b0, a1, b1)) < 1e-4, t, t_chord)
    ok = t < 1.0
    s, module, t = s[ok], module[ok], t[ok]
    point, tangent = _hermite(t[:, None], p0[s], d0[s] * h[s, None], p1[s], d1[s] * h[s, None])
    u, v = det.local_uv(module, point)
    inside = geo.inside_bounds(det, module, np.stack([u, v], axis=1))
    s, module, t, point, tangent = (
        s[inside],
        module[inside],
        t[inside],
        point[inside],
        tangent[inside],
    )
    order = np.lexsort((t, s))
    direction = tangent[order] / np.linalg.norm(tangent[order], axis=1, keepdims=True)
    return s[order], module[order], t[order], point[order], direction


def highland_theta0(
    p: np.ndarray, x_over_x0: np.ndarray, mass: float = PION_MASS_GEV
) -> np.ndarray:
    """Highland multiple-scattering width (rad) [n] for momenta p [n] (GeV), unit charge."""
    beta = p / np.sqrt(p * p + mass * mass)
    x = np.maximum(x_over_x0, 1e-9)
    return 13.6e-3 / (beta * p) * np.sqrt(x) * (1.0 + 0.038 * np.log(x / (beta * beta)))


def _scatter(seg, t, h_seg, p_seg, x, cross_dir, new_dir, new_pos, rng) -> np.ndarray:
    """Multiple scattering at K crossings: kick the step-end directions new_dir [S, 3] (in
    place, renormalised) by two Gaussian angles of Highland width per crossing, and move
    the step-end positions new_pos [S, 3] by kick x path left in the step (a kink at the
    crossing). seg [K] segment of each crossing, t [K] its step fraction, h_seg [K] step
    length (mm), p_seg [K] momentum (GeV), x [K] x/X0 crossed, cross_dir [K, 3].
    Returns the direction kicks [K, 3]."""
    theta0 = highland_theta0(p_seg, x)
    e1 = row_cross(cross_dir, np.array([[0.0, 0.0, 1.0]]).repeat(len(seg), 0))
    norm = np.linalg.norm(e1, axis=1, keepdims=True)
    e1 = np.where(norm > 1e-9, e1 / np.maximum(norm, 1e-12), np.array([[1.0, 0.0, 0.0]]))
    e2 = row_cross(cross_dir, e1)
    angles = rng.standard_normal((len(seg), 2)) * theta0[:, None]
    kick = angles[:, :1] * e1 + angles[:, 1:] * e2
    left = (1.0 - t) * h_seg
    n = len(new_dir)
    for axis in range(3):
        new_dir[:, axis] += np.bincount(seg, kick[:, axis], minlength=n)
        new_pos[:, axis] += np.bincount(seg, kick[:, axis] * left, minlength=n)
    new_dir /= np.linalg.norm(new_dir, axis=1, keepdims=True)
    return kick


def _earlier_in_step(seg: np.ndarray, kick: np.ndarray) -> np.ndarray:
    """Sum [K, 3] of the kicks of the earlier crossings in the same step (crossings sorted
    by segment, then by position in the step), so a second hit on an overlapping module
    carries the first module's scattering in its truth momentum."""
    total = np.cumsum(kick, axis=0)
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    group_start = starts[np.cumsum(np.r_[True, seg[1:] != seg[:-1]]) - 1]
    return total - kick - (total[group_start] - kick[group_start])


def _interactions(seg, t, n_segments, probability, rng) -> tuple[np.ndarray, np.ndarray]:
    """Nuclear interactions at K crossings (segment seg [K], step fraction t [K]): a mask
    [K] of the crossings kept (up to and including each segment's first interaction) and
    the segments [E] whose particle ends there."""
    interacts = rng.random(len(seg)) < probability
    first_end = np.full(n_segments, np.inf)
    np.minimum.at(first_end, seg[interacts], t[interacts])
    before = t <= first_end[seg]
    return before, seg[interacts & before]


def _transverse_turn(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Absolute azimuthal angle [n] (rad) between the transverse parts of two directions."""
    cross_z = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot_xy = before[:, 0] * after[:, 0] + before[:, 1] * after[:, 1]
    return np.abs(np.arctan2(cross_z, dot_xy))


def _keeps_going(pos, direction, path, p, turning, config: TransportConfig) -> np.ndarray:
    """True [n] for particles still inside the tracker, under the path and turning limits,
    with momentum left, and not a looper heading back towards the beam line."""
    r = np.hypot(pos[:, 0], pos[:, 1])
    inside = (r < R_EXIT_MM) & (np.abs(pos[:, 2]) < Z_EXIT_MM)
    slope = np.abs(direction[:, 2]) / np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-12)
    capped = (turning >= config.max_turning_rad) & (slope < config.turning_cap_max_slope)
    limits = (path < config.max_path_mm) & (p > 1e-3) & ~capped
    inward = pos[:, 0] * direction[:, 0] + pos[:, 1] * direction[:, 1] < 0
    return inside & limits & ~(inward & (turning > config.stop_inward_after_rad))


def material_of_modules(det: geo.Detector) -> np.ndarray:
    """x/X0 at normal incidence [M] of every module (``X_OVER_X0`` of its volume)."""
    table = np.zeros(int(det.volume_id.max()) + 1)
    for volume, value in X_OVER_X0.items():
        table[volume] = value
    return table[det.volume_id]


def transport(
    det: geo.Detector,
    field: Field,
    vertex: np.ndarray,
    momentum: np.ndarray,
    charge: np.ndarray,
    config: TransportConfig,
    rng: np.random.Generator | None,
) -> Crossings:
    """Transport particles (vertex [n, 3] mm, momentum [n, 3] GeV, charge [n]) and return
    every module crossing. ``rng`` is needed when scattering or interactions are on."""
    p_abs = np.linalg.norm(momentum, axis=1)
    alive = np.flatnonzero((p_abs > 0) & (charge != 0))
    pos = vertex[alive].astype(np.float64)
    direction = momentum[alive] / p_abs[alive, None]
    p = p_abs[alive].copy()
    q = charge[alive].astype(np.float64)
    path = np.zeros(len(alive))
    turning = np.zeros(len(alive))
    material = material_of_modules(det)
    energy = np.sqrt(p * p + PION_MASS_GEV**2)
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("particle", "module", "position", "momentum", "path")
    }
    for _ in range(config.max_steps):
        if len(alive) == 0:
            break
        kappa = C_LIGHT * q / p
        h = step_lengths(kappa, field, config.max_step_mm)
        new_pos, new_dir = rk4_step(pos, direction, kappa, h, field)
        seg, module, t, point, cross_dir = intersect_segments(
            det, pos, direction, new_pos, new_dir, h
        )
        cosine = np.maximum(np.abs(np.einsum("ij,ij->i", cross_dir, det.normal[module])), 0.1)
        x = material[module] / cosine
        ended = np.zeros(len(alive), bool)
        if len(seg) and (config.interaction_probability > 0 or config.interactions_per_x0 > 0):
            chance = config.interaction_probability + config.interactions_per_x0 * x
            before, ends = _interactions(seg, t, len(alive), chance, rng)
            seg, module, t, point, cross_dir, cosine, x = (
                a[before] for a in (seg, module, t, point, cross_dir, cosine, x)
            )
            ended[ends] = True
        if len(seg):
            recorded_dir = cross_dir
            if config.scattering:
                kick = _scatter(seg, t, h[seg], p[seg], x, cross_dir, new_dir, new_pos, rng)
                recorded_dir = cross_dir + _earlier_in_step(seg, kick)
                recorded_dir /= np.linalg.norm(recorded_dir, axis=1, keepdims=True)
            for key, value in (
                ("particle", alive[seg]),
                ("module", module),
                ("position", point),
                ("momentum", recorded_dir * p[seg, None]),
                ("path", path[seg] + t * h[seg]),
            ):
                out[key].append(value)
            if config.energy_loss:
                silicon = det.thickness[module] / SILICON_X0_MM / cosine
                loss = ENERGY_LOSS_PER_X0_GEV * silicon
                energy -= np.bincount(seg, loss, minlength=len(alive))
        turning = turning + _transverse_turn(direction, new_dir)
        pos, direction = new_pos, new_dir
        path = path + h
        if config.energy_loss:
            p = np.sqrt(np.maximum(energy * energy - PION_MASS_GEV**2, 0.0))
        stay = _keeps_going(pos, direction, path, p, turning, config) & ~ended
        if not stay.all():
            alive, pos, direction, p, q, path, energy, turning = (
                a[stay] for a in (alive, pos, direction, p, q, path, energy, turning)
            )
    if not out["particle"]:
        return Crossings(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, 3)),
            np.zeros((0, 3)),
            np.zeros(0),
        )
    parts = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((parts["path"], parts["particle"]))
    return Crossings(**{k: v[order] for k, v in parts.items()})
