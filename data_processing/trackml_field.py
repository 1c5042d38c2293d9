"""Magnetic field of the TrackML solenoid and a vectorised Runge-Kutta track stepper.

Field (tesla, positions in mm): an axially symmetric solenoid whose axial component falls
off with abs(z). ``Bz(abs z)`` is piecewise linear through the medians measured from the real
sample's truth momenta (SPEC section 9): 1.99 T at abs(z) < 0.5 m, 1.92 T at 0.5-1 m,
1.67 T at 1-1.5 m, 1.13 T at 1.5-2 m and about 0.46 T at 2-3 m, placed at the bin centres
(0.25, 0.75, 1.25, 1.75, 2.5 m), flat inside the first centre and beyond 3.2 m. The
radial component follows from div B = 0 to first order in r: Br = -(r / 2) dBz/dz, so
field lines open outwards at large abs(z). ``field_kind="uniform"`` gives 2 T along +z
everywhere, ``"off"`` no field (straight lines).

Motion: a particle of charge q (e) and momentum p (GeV) moving along the unit direction
d obeys dd/ds = kappa d x B with kappa = 0.299792458e-3 q / p per (mm T), s the path
length in mm. With B along +z a positive particle turns clockwise seen from +z (SPEC 9).
``rk4_step`` advances all particles together by one classical Runge-Kutta step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Curvature constant: kappa = C_LIGHT * q / p in 1/(mm T) for p in GeV.
C_LIGHT = 0.299792458e-3

#: Apparent axial field A(abs z) (T) at abs(z) knots (mm): the transverse bending rate of
#: the real sample's truth momenta between consecutive hits, expressed as a field
#: (A = -dphi pT / (C_LIGHT q chord)), median per 250 mm bin of abs(z) over all radii (pairs
#: with pT > 0.3 GeV and a transverse chord of 20-300 mm; ``benchmarks/trackml_sim.py``
#: re-measures it). For a particle from the origin this is Bz - (pz / pT) Br, not Bz.
APPARENT_Z_KNOTS_MM = (
    125.0,
    375.0,
    625.0,
    875.0,
    1125.0,
    1375.0,
    1625.0,
    1875.0,
    2125.0,
    2375.0,
    2625.0,
    2875.0,
)
APPARENT_BZ_T = (
    2.002,
    1.981,
    1.946,
    1.914,
    1.836,
    1.692,
    1.489,
    0.984,
    0.973,
    0.293,
    -0.341,
    -0.457,
)

_GRID_MM = np.linspace(0.0, 3600.0, 721)


def _true_bz_profile() -> tuple[np.ndarray, np.ndarray]:
    """Axial field Bz(abs z) and its slope on ``_GRID_MM`` whose apparent field is A.

    With Br = -(r / 2) dBz/dz and pz / pT = z / r for a track from the origin,
    A(z) = Bz + (z / 2) dBz/dz = d(z^2 Bz)/dz / (2 z), so Bz(z) = (2 / z^2) int_0^z z' A dz'.
    """
    apparent = np.interp(_GRID_MM, APPARENT_Z_KNOTS_MM, APPARENT_BZ_T)
    integrand = _GRID_MM * apparent
    integral = np.concatenate(
        [[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(_GRID_MM))]
    )
    bz = np.where(_GRID_MM > 0, 2.0 * integral / np.maximum(_GRID_MM, 1e-9) ** 2, apparent[0])
    return bz, np.gradient(bz, _GRID_MM)


_TRUE_BZ, _TRUE_SLOPE = _true_bz_profile()

#: Largest distance (mm) between a step's chord and its arc that the stepper allows; the
#: geometry's band margins are larger than this.
MAX_SAGITTA_MM = 0.5


def _on_grid(abs_z: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` on the uniform ``_GRID_MM`` at abs_z [n] (mm),
    held constant beyond the grid (np.interp's result, without its binary search)."""
    spacing = _GRID_MM[1] - _GRID_MM[0]
    position = np.minimum(abs_z / spacing, len(_GRID_MM) - 1.000001)
    index = position.astype(np.int64)
    frac = position - index
    return values[index] * (1.0 - frac) + values[index + 1] * frac


@dataclass(frozen=True)
class Field:
    """A field map: ``kind`` is "solenoid" (measured falling Bz plus Br), "uniform" (2 T) or
    "off"; ``include_radial`` switches the solenoid's radial component."""

    kind: str = "solenoid"
    include_radial: bool = True
    uniform_tesla: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in ("solenoid", "uniform", "off"):
            raise ValueError(f"field kind must be solenoid, uniform or off, not {self.kind!r}")

    @property
    def nominal_tesla(self) -> float:
        """Largest field magnitude (T), for step-size control."""
        return {"solenoid": float(_TRUE_BZ.max()), "uniform": self.uniform_tesla, "off": 0.0}[
            self.kind
        ]

    def bz_of_z(self, z: np.ndarray) -> np.ndarray:
        """Axial field Bz [n] (T) at z [n] (mm) on the axis."""
        if self.kind == "off":
            return np.zeros_like(z)
        if self.kind == "uniform":
            return np.full_like(z, self.uniform_tesla)
        if self.include_radial:
            return _on_grid(np.abs(z), _TRUE_BZ)
        return np.interp(np.abs(z), APPARENT_Z_KNOTS_MM, APPARENT_BZ_T)

    def __call__(self, pos: np.ndarray) -> np.ndarray:
        """Field vectors [n, 3] (T) at positions [n, 3] (mm)."""
        z = pos[:, 2]
        field = np.zeros_like(pos)
        field[:, 2] = self.bz_of_z(z)
        if self.kind == "solenoid" and self.include_radial:
            dbz_dabsz = _on_grid(np.abs(z), _TRUE_SLOPE)
            # dBz/dz = sign(z) dBz/d|z|; Br = -(r/2) dBz/dz, so Bx = Br x/r = -(x/2) dBz/dz.
            half_gradient = -0.5 * np.sign(z) * dbz_dabsz
            field[:, 0] = half_gradient * pos[:, 0]
            field[:, 1] = half_gradient * pos[:, 1]
        return field


def row_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of [n, 3] arrays (cheaper than np.cross)."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def step_lengths(kappa: np.ndarray, field: Field, max_step_mm: float) -> np.ndarray:
    """Step lengths [n] (mm): at most ``max_step_mm`` and short enough that the chord stays
    within MAX_SAGITTA_MM of the arc (sagitta = h^2 / (8 R), 1/R = abs(kappa) B)."""
    curvature = np.abs(kappa) * field.nominal_tesla
    with np.errstate(divide="ignore"):
        limit = np.sqrt(8.0 * MAX_SAGITTA_MM / curvature)
    return np.clip(limit, 1.0, max_step_mm)


def rk4_step(
    pos: np.ndarray, direction: np.ndarray, kappa: np.ndarray, h: np.ndarray, field: Field
) -> tuple[np.ndarray, np.ndarray]:
    """One Runge-Kutta-4 step of length h [n] (mm) for positions and unit directions
    [n, 3], kappa [n] (1/(mm T)). Returns the new positions and unit directions [n, 3]."""
    if field.kind == "off":
        return pos + h[:, None] * direction, direction
    kap = kappa[:, None]
    hh = h[:, None]

    k1 = kap * row_cross(direction, field(pos))
    d2 = direction + 0.5 * hh * k1
    p2 = pos + 0.5 * hh * direction + 0.125 * hh * hh * k1
    field_mid = field(p2)  # Nystrom: stages 2 and 3 share their position
    k2 = kap * row_cross(d2, field_mid)
    d3 = direction + 0.5 * hh * k2
    k3 = kap * row_cross(d3, field_mid)
    d4 = direction + hh * k3
    p4 = pos + hh * direction + 0.5 * hh * hh * k3
    k4 = kap * row_cross(d4, field(p4))
    new_pos = pos + hh * direction + hh * hh / 6.0 * (k1 + k2 + k3)
    new_dir = direction + hh / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    new_dir /= np.linalg.norm(new_dir, axis=1, keepdims=True)
    return new_pos, new_dir
