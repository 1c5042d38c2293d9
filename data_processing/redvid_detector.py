"""The toy detector of the REDVID-style simulator: barrel cylinders and endcap disks (metres).

``DetectorGeometry`` holds the surfaces (defaults: 5 barrel cylinders, 4 disks per side,
9 layer ids), ``layer_crossings`` intersects tracks r = a t, z = b t with all of them at
once and ``reaches_outermost`` is the acceptance every kept track must pass.
``wrap_angle`` wraps azimuths to [-pi, pi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_processing.errors import UserError

BARREL = "barrel"
DISK = "disk"
_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class DetectorGeometry:
    """Barrel cylinders plus endcap disks placed symmetrically at +z and -z (metres).

    Defaults (5 barrel cylinders + 4 disks per side = 9 layer ids):

    - barrel radii 0.05, 0.10, 0.20, 0.35, 0.50 m, each with half-length 0.60 m;
    - disks at |z| = 0.72, 0.84, 0.96, 1.08 m, inner radii 0.072, 0.084, 0.096, 0.108 m
      (|z| / 10), outer radii 0.62, 0.72, 0.82, 0.92 m.

    The disk outer radii slightly exceed the projection of the outermost barrel's edge
    (|z|/r = 0.60/0.50), so the barrel-endcap transition has no hole, and the inner radii
    are projective, so every direction with |cot(theta)| <= 10 (|cos(theta)| <= 0.995)
    reaches the outermost barrel or the outermost disk and an endcap track crosses all
    4 disks. A track from the origin has monotone |z| and r, so it crosses each surface
    at most once and enters one endcap only: 5 hits in the central barrel, 5 to 8 in the
    endcaps and at most 9 (5 barrel + 4 disk hits) in the barrel-endcap transition.

    Attributes:
        barrel_radii: radius R of each barrel cylinder, m, shape (n_barrels,).
        barrel_half_lengths: half-length L of each cylinder (|z| <= L), m, (n_barrels,).
        disk_z: |z| position Z of each disk pair, m, shape (n_disks,).
        disk_inner_radii: inner radius of each disk, m, shape (n_disks,).
        disk_outer_radii: outer radius of each disk, m, shape (n_disks,).
    """

    barrel_radii: tuple[float, ...] = (0.05, 0.10, 0.20, 0.35, 0.50)
    barrel_half_lengths: tuple[float, ...] = (0.60, 0.60, 0.60, 0.60, 0.60)
    disk_z: tuple[float, ...] = (0.72, 0.84, 0.96, 1.08)
    disk_inner_radii: tuple[float, ...] = (0.072, 0.084, 0.096, 0.108)
    disk_outer_radii: tuple[float, ...] = (0.62, 0.72, 0.82, 0.92)

    def __post_init__(self) -> None:
        if not self.barrel_radii:
            raise UserError("DetectorGeometry needs at least one barrel cylinder")
        if len(self.barrel_half_lengths) != len(self.barrel_radii):
            raise UserError("barrel_radii and barrel_half_lengths differ in length")
        if not len(self.disk_z) == len(self.disk_inner_radii) == len(self.disk_outer_radii):
            raise UserError("disk_z, disk_inner_radii and disk_outer_radii differ in length")
        if min(self.barrel_radii) <= 0 or min(self.barrel_half_lengths) <= 0:
            raise UserError("barrel radii and half-lengths must be positive")
        for z, r_in, r_out in zip(
            self.disk_z, self.disk_inner_radii, self.disk_outer_radii, strict=True
        ):
            if z <= 0 or r_in < 0 or r_out <= r_in:
                raise UserError(f"invalid disk (z={z}, inner={r_in}, outer={r_out})")

    @property
    def n_barrels(self) -> int:
        """Number of barrel cylinders (layer ids 0 .. n_barrels-1)."""
        return len(self.barrel_radii)

    @property
    def n_disks(self) -> int:
        """Number of disk pairs (layer ids n_barrels .. n_layers-1)."""
        return len(self.disk_z)

    @property
    def n_layers(self) -> int:
        """Number of layer ids; also the most hits a track can leave."""
        return self.n_barrels + self.n_disks

    @property
    def layer_types(self) -> tuple[str, ...]:
        """``sub_detector_type`` of each layer id: "barrel" or "disk"."""
        return (BARREL,) * self.n_barrels + (DISK,) * self.n_disks

    @property
    def outermost_barrel(self) -> int:
        """Layer id of the barrel cylinder with the largest radius."""
        return int(np.argmax(self.barrel_radii))

    @property
    def outermost_disk(self) -> int | None:
        """Layer id of the disk with the largest |z|, or None without disks."""
        if not self.disk_z:
            return None
        return self.n_barrels + int(np.argmax(self.disk_z))

    @property
    def acceptance_cos_theta(self) -> float:
        """Largest |cos(theta)| of a straight track from the origin that reaches the
        outermost layer (1.0 when the outermost disk reaches the beam line)."""
        b = self.outermost_barrel
        slope = self.barrel_half_lengths[b] / self.barrel_radii[b]  # max |z|/r, barrel
        d = self.outermost_disk
        if d is not None:
            r_in = self.disk_inner_radii[d - self.n_barrels]
            if r_in == 0:
                return 1.0
            slope = max(slope, self.disk_z[d - self.n_barrels] / r_in)
        return slope / math.hypot(1.0, slope)


def default_geometry() -> DetectorGeometry:
    """The default 9-layer geometry (see ``DetectorGeometry`` for the values)."""
    return DetectorGeometry()


def wrap_angle(phi: np.ndarray) -> np.ndarray:
    """Wrap angles (rad, any shape) to [-pi, pi)."""
    wrapped = np.mod(phi + np.pi, _TWO_PI) - np.pi
    # np.mod can round a tiny negative up to exactly 2*pi, which would give +pi.
    return np.where(wrapped >= np.pi, wrapped - _TWO_PI, wrapped)


def layer_crossings(
    geometry: DetectorGeometry, radial_coeff: np.ndarray, pitch_coeff: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersect tracks r = a*t, z = b*t (t > 0) with every layer surface.

    Only the r-z projection matters for which surfaces are crossed, and r is monotone
    in t, so each surface is crossed at most once.

    Args:
        geometry: the detector.
        radial_coeff: a > 0 per track, shape (T,).
        pitch_coeff: b per track, shape (T,).

    Returns:
        t, r, z, hit: arrays of shape (T, n_layers) with the track parameter t (m), the
        crossing's r and z (m) and whether the track crosses the layer (t, r, z are
        meaningless where hit is False). Barrel r and disk |z| are exactly the surface's.
    """
    a = radial_coeff[:, None]
    b = pitch_coeff[:, None]
    radii = np.asarray(geometry.barrel_radii, dtype=float)[None, :]
    half_lengths = np.asarray(geometry.barrel_half_lengths, dtype=float)[None, :]
    disk_z = np.asarray(geometry.disk_z, dtype=float)[None, :]
    r_in = np.asarray(geometry.disk_inner_radii, dtype=float)[None, :]
    r_out = np.asarray(geometry.disk_outer_radii, dtype=float)[None, :]

    t_barrel = radii / a
    z_barrel = b * t_barrel
    hit_barrel = np.abs(z_barrel) <= half_lengths
    r_barrel = np.broadcast_to(radii, t_barrel.shape)

    # A track with b == 0 stays at z = 0 and never reaches a disk.
    abs_b = np.broadcast_to(np.abs(b), (len(pitch_coeff), geometry.n_disks))
    moving = abs_b > 0
    t_disk = np.divide(disk_z, abs_b, out=np.full(abs_b.shape, np.inf), where=moving)
    r_disk = a * t_disk
    z_disk = np.sign(b) * disk_z
    hit_disk = moving & (r_disk >= r_in) & (r_disk <= r_out)

    t = np.concatenate([t_barrel, t_disk], axis=1)
    r = np.concatenate([r_barrel, r_disk], axis=1)
    z = np.concatenate([z_barrel, z_disk], axis=1)
    hit = np.concatenate([hit_barrel, hit_disk], axis=1)
    return t, r, z, hit


def reaches_outermost(geometry: DetectorGeometry, hit: np.ndarray) -> np.ndarray:
    """(T,) mask: the track crosses the outermost barrel cylinder or outermost disk."""
    reached = hit[:, geometry.outermost_barrel].copy()
    if geometry.outermost_disk is not None:
        reached |= hit[:, geometry.outermost_disk]
    return reached
