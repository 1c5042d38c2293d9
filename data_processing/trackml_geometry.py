"""The real TrackML detector for the fast simulator: modules, layers and plane crossings.

The detector description is Kaggle's ``detectors.csv`` (shipped gzipped in
``data_processing/trackml_detector/``, see its PROVENANCE.md): 18,728 planar modules, each
with a centre ``c`` (mm), a rotation ``R`` from local (u, v, w) to global coordinates
(global = R @ local + c; the normal is R's third column), half-widths ``minhu`` (at
v = -hv) and ``maxhu`` (at v = +hv) along u, ``hv`` along v (rectangles have
minhu == maxhu, trapezoids not), a thickness and the cell pitch along u and v.

Layers: a layer (volume_id, layer_id) is a *band*: an interval of radius (barrel volumes
8, 13, 17) or of z (endcap volumes 7/9, 12/14, 16/18) that holds all its modules, plus
the range of the other coordinate (z in barrels, r in endcaps). Layers are grouped so that
the bands inside one group are disjoint and sorted (all barrels by r; each endcap family by
signed z), which lets ``layer_pairs`` find the layers a step segment touches with one
``searchsorted`` per group.

Candidate modules: each layer is binned in (phi, second coordinate) and every module is
registered in every bin its surface (plus a margin) reaches, so a segment asks at most two
bins for its candidates (``candidate_modules``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_processing.errors import UserError

#: Folder of the shipped real inputs (detector description, particle table).
DETECTOR_DIR = Path(__file__).resolve().parent / "trackml_detector"
DETECTOR_FILE = DETECTOR_DIR / "detectors.csv.gz"

BARREL_VOLUMES = (8, 13, 17)
ENDCAP_FAMILIES = ((7, 9), (12, 14), (16, 18))
KNOWN_VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)

DETECTOR_COLUMNS = (
    "volume_id layer_id module_id cx cy cz rot_xu rot_xv rot_xw rot_yu rot_yv rot_yw "
    "rot_zu rot_zv rot_zw module_t module_minhu module_maxhu module_hv pitch_u pitch_v"
).split()

#: Extra width (mm) of every band and bin: covers the chord-versus-arc sagitta of a step
#: (the stepper keeps it under ``trackml_field.MAX_SAGITTA_MM``) and rounding.
BAND_MARGIN_MM = 2.0
BIN_MARGIN_MM = 3.0


@dataclass(frozen=True)
class Detector:
    """Module and layer arrays of one detector description (M modules, L layers).

    Modules: ``volume_id, layer_id, module_id`` [M] int; ``centre`` [M, 3] mm; ``rotation``
    [M, 3, 3] (columns u, v, w in global coordinates); ``thickness, minhu, maxhu, hv,
    pitch_u, pitch_v`` [M] mm; ``layer_index`` [M] into the layer arrays; ``area`` [M] mm^2.
    Layers: ``layer_volume, layer_layer`` [L]; ``layer_is_barrel`` [L] bool;
    ``band_lo, band_hi`` [L] (r for barrels, z for endcaps, mm, margin included);
    ``other_lo, other_hi`` [L] (z for barrels, r for endcaps); ``layer_group`` [L] int.
    Bins: per layer ``bin_offset, n_phi, n_second, second_lo, second_width`` [L];
    ``bin_modules`` [n_bins, C] module indices padded with -1.
    """

    volume_id: np.ndarray
    layer_id: np.ndarray
    module_id: np.ndarray
    centre: np.ndarray
    rotation: np.ndarray
    thickness: np.ndarray
    minhu: np.ndarray
    maxhu: np.ndarray
    hv: np.ndarray
    pitch_u: np.ndarray
    pitch_v: np.ndarray
    layer_index: np.ndarray
    area: np.ndarray
    layer_volume: np.ndarray
    layer_layer: np.ndarray
    layer_is_barrel: np.ndarray
    band_lo: np.ndarray
    band_hi: np.ndarray
    other_lo: np.ndarray
    other_hi: np.ndarray
    layer_group: np.ndarray
    bin_offset: np.ndarray
    n_phi: np.ndarray
    n_second: np.ndarray
    second_lo: np.ndarray
    second_width: np.ndarray
    bin_modules: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """Unit normals [M, 3] (the rotations' third columns)."""
        return self._frame_column(2)

    @property
    def plane_offset(self) -> np.ndarray:
        """n . c [M] (mm): a point x lies on module m's mid-plane when n_m . x = offset_m."""
        key = "_plane_offset"
        if key not in self.__dict__:
            object.__setattr__(self, key, np.einsum("ij,ij->i", self.normal, self.centre))
        return self.__dict__[key]

    def _frame_column(self, column: int) -> np.ndarray:
        """Column ``column`` [M, 3] of every rotation, cached (contiguous for fast gathers)."""
        key = f"_frame_{column}"
        if key not in self.__dict__:  # a derived read-only array, computed once
            object.__setattr__(self, key, np.ascontiguousarray(self.rotation[:, :, column]))
        return self.__dict__[key]

    def local_uv(self, module: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (u, v) [n] each of global points [n, 3] on modules [n]."""
        offset = points - self.centre[module]
        u = np.einsum("ij,ij->i", offset, self._frame_column(0)[module])
        v = np.einsum("ij,ij->i", offset, self._frame_column(1)[module])
        return u, v

    @property
    def n_modules(self) -> int:
        return len(self.module_id)

    def module_lookup(
        self, volume: np.ndarray, layer: np.ndarray, module: np.ndarray
    ) -> np.ndarray:
        """Module indices [n] of (volume, layer, module) ids [n]; -1 where unknown."""
        key = _module_key(self.volume_id, self.layer_id, self.module_id)
        order = np.argsort(key)
        wanted = _module_key(np.asarray(volume), np.asarray(layer), np.asarray(module))
        pos = np.clip(np.searchsorted(key[order], wanted), 0, len(key) - 1)
        found = key[order][pos] == wanted
        return np.where(found, order[pos], -1)


def _module_key(volume: np.ndarray, layer: np.ndarray, module: np.ndarray) -> np.ndarray:
    return (volume.astype(np.int64) * 1000 + layer.astype(np.int64)) * 100_000 + module


def read_detector_table(path: str | os.PathLike[str] = DETECTOR_FILE) -> pd.DataFrame:
    """Read a ``detectors.csv[.gz]`` (Kaggle layout; a leading unnamed index is dropped).

    Raises UserError naming the file for a missing column or an unknown volume_id.
    """
    path = Path(path)
    table = pd.read_csv(path)
    if table.columns[0].startswith("Unnamed"):
        table = table.drop(columns=table.columns[0])
    missing = [c for c in DETECTOR_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} in detector table")
    unknown = sorted(set(table["volume_id"].unique()) - set(KNOWN_VOLUMES))
    if unknown:
        raise UserError(f"{path}: unknown volume_id {unknown[0]} (known: {KNOWN_VOLUMES})")
    if table[DETECTOR_COLUMNS].isna().any().any():
        raise UserError(f"{path}: NaN values in the detector table")
    return table


def half_width_u(minhu: np.ndarray, maxhu: np.ndarray, hv: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Half-width along u at local v (mm): minhu at v = -hv growing linearly to maxhu at +hv."""
    return minhu + (maxhu - minhu) * (v + hv) / (2.0 * hv)


def _surface_samples(centre, rotation, minhu, maxhu, hv, n: int = 7) -> np.ndarray:
    """Points [M, n*n, 3] on each module surface (grid in v and in the fraction of u)."""
    frac = np.linspace(-1.0, 1.0, n)
    fv, fu = np.meshgrid(frac, frac, indexing="ij")
    v = fv.ravel()[None, :] * hv[:, None]
    u = fu.ravel()[None, :] * half_width_u(minhu[:, None], maxhu[:, None], hv[:, None], v)
    local = np.stack([u, v, np.zeros_like(u)], axis=-1)
    return centre[:, None, :] + np.einsum("mij,mkj->mki", rotation, local)


def build_detector(table: pd.DataFrame) -> Detector:
    """Module frames, layer bands, groups and candidate bins from a detector table."""
    volume = table["volume_id"].to_numpy(np.int64)
    layer = table["layer_id"].to_numpy(np.int64)
    centre = table[["cx", "cy", "cz"]].to_numpy(np.float64)
    rotation = np.stack(
        [table[f"rot_{a}{b}"].to_numpy(np.float64) for a in "xyz" for b in "uvw"], axis=1
    ).reshape(-1, 3, 3)
    minhu, maxhu, hv = (
        table[c].to_numpy(np.float64) for c in ("module_minhu", "module_maxhu", "module_hv")
    )
    thickness = table["module_t"].to_numpy(np.float64)

    layer_keys, layer_index = np.unique(volume * 1000 + layer, return_inverse=True)
    layer_volume, layer_layer = layer_keys // 1000, layer_keys % 1000
    is_barrel = np.isin(layer_volume, BARREL_VOLUMES)

    samples = _surface_samples(centre, rotation, minhu, maxhu, hv)
    sample_r = np.hypot(samples[..., 0], samples[..., 1])
    sample_z = samples[..., 2]
    half_t = 0.5 * thickness[:, None]
    n_layers = len(layer_keys)
    band_lo, band_hi = np.empty(n_layers), np.empty(n_layers)
    other_lo, other_hi = np.empty(n_layers), np.empty(n_layers)
    for i in range(n_layers):  # 48 layers: setup only
        m = layer_index == i
        r, z = sample_r[m], sample_z[m]
        first, second = (r, z) if is_barrel[i] else (z, r)
        band_lo[i] = first.min() - half_t[m].max() - BAND_MARGIN_MM
        band_hi[i] = first.max() + half_t[m].max() + BAND_MARGIN_MM
        other_lo[i] = second.min() - BAND_MARGIN_MM
        other_hi[i] = second.max() + BAND_MARGIN_MM
    group = np.zeros(n_layers, np.int64)
    for g, family in enumerate(ENDCAP_FAMILIES, start=1):
        group[np.isin(layer_volume, family)] = g
    for g in range(len(ENDCAP_FAMILIES) + 1):
        order = np.argsort(band_lo[group == g])
        lo, hi = band_lo[group == g][order], band_hi[group == g][order]
        if np.any(lo[1:] <= hi[:-1]):
            raise UserError("detector table: overlapping layer bands, not a TrackML geometry")

    bins = _build_bins(layer_index, is_barrel, samples, other_lo, other_hi, n_layers, hv, maxhu)
    area = (minhu + maxhu) * 2.0 * hv
    return Detector(
        volume_id=volume,
        layer_id=layer,
        module_id=table["module_id"].to_numpy(np.int64),
        centre=centre,
        rotation=rotation,
        thickness=thickness,
        minhu=minhu,
        maxhu=maxhu,
        hv=hv,
        pitch_u=table["pitch_u"].to_numpy(np.float64),
        pitch_v=table["pitch_v"].to_numpy(np.float64),
        layer_index=layer_index,
        area=area,
        layer_volume=layer_volume,
        layer_layer=layer_layer,
        layer_is_barrel=is_barrel,
        band_lo=band_lo,
        band_hi=band_hi,
        other_lo=other_lo,
        other_hi=other_hi,
        layer_group=group,
        **bins,
    )


def _build_bins(layer_index, is_barrel, samples, other_lo, other_hi, n_layers, hv, maxhu) -> dict:
    """Per-layer (phi, second) bins, each listing every module whose surface reaches it."""
    sample_phi = np.arctan2(samples[..., 1], samples[..., 0])
    sample_r = np.hypot(samples[..., 0], samples[..., 1])
    second = np.where(is_barrel[layer_index][:, None], samples[..., 2], sample_r)
    centre_phi = sample_phi[:, sample_phi.shape[1] // 2]
    rel = np.angle(np.exp(1j * (sample_phi - centre_phi[:, None])))
    margin_phi = BIN_MARGIN_MM / np.maximum(sample_r.min(axis=1), 20.0)
    phi_lo = centre_phi + rel.min(axis=1) - margin_phi
    phi_hi = centre_phi + rel.max(axis=1) + margin_phi
    sec_lo = second.min(axis=1) - BIN_MARGIN_MM
    sec_hi = second.max(axis=1) + BIN_MARGIN_MM

    n_phi = np.empty(n_layers, np.int64)
    n_second = np.empty(n_layers, np.int64)
    second_lo = other_lo.copy()
    second_width = np.empty(n_layers)
    for i in range(n_layers):
        m = layer_index == i
        r_typ = np.median(sample_r[m])
        n_phi[i] = max(8, int(2 * np.pi * r_typ / (2 * maxhu[m].max())))
        size = 2 * hv[m].max() if is_barrel[i] else hv[m].max()
        n_second[i] = max(1, int((other_hi[i] - other_lo[i]) / size))
        second_width[i] = (other_hi[i] - other_lo[i]) / n_second[i]
    bin_offset = np.concatenate([[0], np.cumsum(n_phi * n_second)[:-1]])

    li = layer_index
    width_phi = 2 * np.pi / n_phi[li]
    iphi_lo = np.floor(phi_lo / width_phi).astype(np.int64)
    iphi_hi = np.floor(phi_hi / width_phi).astype(np.int64)
    isec_lo = np.clip(np.floor((sec_lo - second_lo[li]) / second_width[li]), 0, n_second[li] - 1)
    isec_hi = np.clip(np.floor((sec_hi - second_lo[li]) / second_width[li]), 0, n_second[li] - 1)
    isec_lo, isec_hi = isec_lo.astype(np.int64), isec_hi.astype(np.int64)
    span_phi = int((iphi_hi - iphi_lo).max()) + 1
    span_sec = int((isec_hi - isec_lo).max()) + 1
    dphi, dsec = np.meshgrid(np.arange(span_phi), np.arange(span_sec), indexing="ij")
    dphi, dsec = dphi.ravel(), dsec.ravel()
    ip = iphi_lo[:, None] + dphi[None, :]
    isec = isec_lo[:, None] + dsec[None, :]
    valid = (ip <= iphi_hi[:, None]) & (isec <= isec_hi[:, None])
    module = np.broadcast_to(np.arange(len(li))[:, None], ip.shape)[valid]
    ip, isec = ip[valid], isec[valid]
    lm = li[module]
    global_bin = bin_offset[lm] + (ip % n_phi[lm]) * n_second[lm] + isec
    order = np.lexsort((module, global_bin))
    global_bin, module = global_bin[order], module[order]
    n_bins = int(bin_offset[-1] + n_phi[-1] * n_second[-1])
    counts = np.bincount(global_bin, minlength=n_bins)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(global_bin)) - start[global_bin]
    table = np.full((n_bins, int(counts.max())), -1, np.int64)
    table[global_bin, slot] = module
    return {
        "bin_offset": bin_offset,
        "n_phi": n_phi,
        "n_second": n_second,
        "second_lo": second_lo,
        "second_width": second_width,
        "bin_modules": table,
    }


_DETECTOR_CACHE: dict[str, Detector] = {}


def load_detector(path: str | os.PathLike[str] = DETECTOR_FILE) -> Detector:
    """The detector of ``path`` (default: the shipped Kaggle table), built once per process."""
    key = str(Path(path).resolve())
    if key not in _DETECTOR_CACHE:  # a read-only cache of an immutable object
        _DETECTOR_CACHE[key] = build_detector(read_detector_table(path))
    return _DETECTOR_CACHE[key]


def layer_pairs(det: Detector, p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment, layer) pairs whose bands the chords p0 -> p1 [S, 3] overlap.

    Returns two int arrays [P]: segment indices and layer indices.
    """
    r0, r1 = np.hypot(p0[:, 0], p0[:, 1]), np.hypot(p1[:, 0], p1[:, 1])
    z0, z1 = p0[:, 2], p1[:, 2]
    segs, layers = [], []
    for g in range(len(ENDCAP_FAMILIES) + 1):  # four groups, not per particle
        ids = np.flatnonzero(det.layer_group == g)
        ids = ids[np.argsort(det.band_lo[ids])]
        lo, hi = det.band_lo[ids], det.band_hi[ids]
        a0, a1 = (r0, r1) if g == 0 else (z0, z1)
        b0, b1 = (z0, z1) if g == 0 else (r0, r1)
        amin, amax = np.minimum(a0, a1), np.maximum(a0, a1)
        first = np.searchsorted(hi, amin, side="left")
        last = np.searchsorted(lo, amax, side="right") - 1
        count = np.maximum(last - first + 1, 0)
        seg = np.repeat(np.arange(len(amin)), count)
        if len(seg) == 0:
            continue
        within = np.arange(len(seg)) - np.repeat(np.cumsum(count) - count, count)
        lay = ids[first[seg] + within]
        bmin, bmax = np.minimum(b0, b1)[seg], np.maximum(b0, b1)[seg]
        keep = (bmax >= det.other_lo[lay]) & (bmin <= det.other_hi[lay])
        segs.append(seg[keep])
        layers.append(lay[keep])
    if not segs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(segs), np.concatenate(layers)


def _bin_of(det: Detector, layer: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Global bin index [P] of points [P, 3] on layers [P]."""
    phi = np.arctan2(point[:, 1], point[:, 0])
    second = np.where(det.layer_is_barrel[layer], point[:, 2], np.hypot(point[:, 0], point[:, 1]))
    n_phi, n_sec = det.n_phi[layer], det.n_second[layer]
    iphi = np.floor(phi / (2 * np.pi / n_phi)).astype(np.int64) % n_phi
    isec = np.floor((second - det.second_lo[layer]) / det.second_width[layer]).astype(np.int64)
    isec = np.clip(isec, 0, n_sec - 1)
    return det.bin_offset[layer] + iphi * n_sec + isec


def candidate_modules(
    det: Detector, layer: np.ndarray, p0: np.ndarray, p1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(pair, module) candidates for (segment, layer) pairs with chords p0 -> p1 [P, 3].

    The chord is clipped to the layer band and the bins of both clip ends are asked (a
    module listed in both counts once). Returns pair indices [K] and module indices [K].
    """
    barrel = det.layer_is_barrel[layer]
    a0 = np.where(barrel, np.hypot(p0[:, 0], p0[:, 1]), p0[:, 2])
    a1 = np.where(barrel, np.hypot(p1[:, 0], p1[:, 1]), p1[:, 2])
    da = a1 - a0
    safe = np.where(np.abs(da) > 1e-9, da, 1.0)
    t_lo = np.where(np.abs(da) > 1e-9, (det.band_lo[layer] - a0) / safe, 0.0)
    t_hi = np.where(np.abs(da) > 1e-9, (det.band_hi[layer] - a0) / safe, 1.0)
    t_a = np.clip(np.minimum(t_lo, t_hi), 0.0, 1.0)[:, None]
    t_b = np.clip(np.maximum(t_lo, t_hi), 0.0, 1.0)[:, None]
    d = p1 - p0
    bin_a = _bin_of(det, layer, p0 + t_a * d)
    bin_b = _bin_of(det, layer, p0 + t_b * d)
    cand_a = det.bin_modules[bin_a]
    cand_b = det.bin_modules[bin_b]
    duplicate = (cand_b[:, :, None] == cand_a[:, None, :]).any(axis=2)
    cand_b = np.where(duplicate | (bin_b == bin_a)[:, None], -1, cand_b)
    cand = np.concatenate([cand_a, cand_b], axis=1)
    pair, slot = np.nonzero(cand >= 0)
    return pair, cand[pair, slot]


def to_local(det: Detector, module: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Local (u, v, w) [n, 3] of global points [n, 3] on modules [n] (R^T (x - c))."""
    return np.einsum("nji,nj->ni", det.rotation[module], points - det.centre[module])


def to_global(det: Detector, module: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Global points [n, 3] of local (u, v, w) [n, 3] on modules [n] (R u + c)."""
    return np.einsum("nij,nj->ni", det.rotation[module], local) + det.centre[module]


def inside_bounds(det: Detector, module: np.ndarray, local: np.ndarray) -> np.ndarray:
    """True [n] where local (u, v) (the first two columns of ``local``) lies within the
    module's rectangle or trapezoid."""
    u, v = local[:, 0], local[:, 1]
    hv = det.hv[module]
    hu = half_width_u(det.minhu[module], det.maxhu[module], hv, v)
    return (np.abs(v) <= hv) & (np.abs(u) <= hu)
