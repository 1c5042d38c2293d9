"""TrackML events -> the tracker's hits: features, filter labels and particle slots.

An event (``data_processing.trackml_events.TrackMLEvent``, e.g. from
``python -m data_processing.trackml_sim``) keeps its hits in the chosen volumes (pixel
volumes 7, 8, 9 by default). Target particles, as in hepattn's TrackML set-up: pT >=
``pt_min`` GeV and |eta| < ``eta_max`` (initial momentum) with at least ``min_hits`` hits
in those volumes. Per hit:

* features ``FEATURES`` (raw): x, y, z, r (mm), eta, phi (rad) of the hit position, and
  the conformal u = x / r^2, v = y / r^2 (1/mm); the simulator makes no cells, so no
  cluster-shape features;
* ``label``: the hit belongs to a target particle (the hit filter's target);
* ``slot``: its target particle's index within the event (0..P-1), -1 otherwise.

``HitSet`` holds many events back to back (host arrays); ``HitSet.device_events`` puts
them on the device in the project's ``DeviceEvents`` (inputs = features, targets =
[label, slot]) so that the project's batching and step loop serve both networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from data_processing.batching import DeviceEvents
from data_processing.common import concatenated_ranges
from data_processing.errors import UserError
from data_processing.trackml_events import TrackMLEvent, list_events, read_event

FEATURES = ("x", "y", "z", "r", "eta", "phi", "u", "v")
#: Columns of DeviceEvents.targets for the tracker family.
TARGET_LABEL, TARGET_SLOT = 0, 1


@dataclass(frozen=True)
class TargetCuts:
    """Which hits and particles the networks see (hepattn: pT 0.6 / 0.9 GeV, |eta| 2.5 / 4)."""

    volumes: tuple[int, ...] = (7, 8, 9)
    pt_min: float = 0.9
    eta_max: float = 2.5
    min_hits: int = 3


def hit_features(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[n, 8] float32 features of hits at (x, y, z) mm, in the order of ``FEATURES``."""
    r2 = x * x + y * y
    r = np.sqrt(r2)
    theta = np.arctan2(r, z)
    eta = -np.log(np.tan(theta / 2))
    return np.stack([x, y, z, r, eta, np.arctan2(y, x), x / r2, y / r2], axis=1).astype(np.float32)


def particle_kinematics(particles: pd.DataFrame) -> pd.DataFrame:
    """particle_id, pt (GeV), eta (momentum pseudorapidity) of a TrackML particles table."""
    px, py, pz = (particles[c].to_numpy(np.float64) for c in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    return pd.DataFrame({"particle_id": particles["particle_id"].to_numpy(), "pt": pt, "eta": eta})


@dataclass
class HitSet:
    """Hits of several events back to back (event e: rows offsets[e]:offsets[e+1]).

    Per hit [T]: ``features`` [T, 8] float32, ``hit_id``, ``particle_id`` (0 noise),
    ``volume_id``, ``layer_id`` int64, ``weight`` float64 (TrackML truth weight),
    ``label`` bool, ``slot`` int64. Per event [E]: ``event_id``. ``particles``: every
    particle of the events (event_id, particle_id, pt, eta).
    """

    features: np.ndarray
    hit_id: np.ndarray
    particle_id: np.ndarray
    volume_id: np.ndarray
    layer_id: np.ndarray
    weight: np.ndarray
    label: np.ndarray
    slot: np.ndarray
    offsets: np.ndarray
    event_id: np.ndarray
    particles: pd.DataFrame

    @property
    def n_events(self) -> int:
        return len(self.event_id)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def hit_event(self) -> np.ndarray:
        """[T] position of each hit's event."""
        return np.repeat(np.arange(self.n_events), self.sizes)

    @property
    def n_particles(self) -> np.ndarray:
        """[E] target particles per event (1 + the largest slot)."""
        most = np.full(self.n_events, -1, dtype=np.int64)
        np.maximum.at(most, self.hit_event, self.slot)
        return most + 1

    def _take(self, rows: np.ndarray, offsets: np.ndarray, event_id: np.ndarray) -> HitSet:
        keep = self.particles["event_id"].isin(event_id).to_numpy()
        return HitSet(
            features=self.features[rows],
            hit_id=self.hit_id[rows],
            particle_id=self.particle_id[rows],
            volume_id=self.volume_id[rows],
            layer_id=self.layer_id[rows],
            weight=self.weight[rows],
            label=self.label[rows],
            slot=self.slot[rows],
            offsets=offsets,
            event_id=event_id,
            particles=self.particles[keep].reset_index(drop=True),
        )

    def subset(self, events: np.ndarray) -> HitSet:
        """The events at positions ``events`` (in that order)."""
        events = np.asarray(events, dtype=np.int64)
        sizes = self.sizes[events]
        rows = concatenated_ranges(self.offsets[events], sizes)
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        return self._take(rows, offsets, self.event_id[events])

    def select_hits(self, keep: np.ndarray, min_hits: int) -> HitSet:
        """Only the hits where ``keep`` ([T] bool) holds, e.g. the filter's output.

        Slots are renumbered within each event over the target particles that keep at
        least ``min_hits`` hits (the tracker's targets); the others' hits get slot -1.
        """
        rows = np.flatnonzero(keep)
        event = self.hit_event[rows]
        sizes = np.bincount(event, minlength=self.n_events)
        kept = self._take(rows, np.r_[0, np.cumsum(sizes)].astype(np.int64), self.event_id)
        kept.slot = renumber_slots(event, kept.slot, min_hits)
        return kept

    def truth_frame(self) -> pd.DataFrame:
        """Per hit: event_id, hit_id, particle_id, weight, volume_id, layer_id (scoring)."""
        return pd.DataFrame(
            {
                "event_id": self.event_id[self.hit_event],
                "hit_id": self.hit_id,
                "particle_id": self.particle_id,
                "weight": self.weight,
                "volume_id": self.volume_id,
                "layer_id": self.layer_id,
            }
        )

    def device_events(self, device: torch.device | str = "cpu") -> DeviceEvents:
        """The project's DeviceEvents: inputs = raw features, targets = [label, slot]."""
        targets = np.stack([self.label, self.slot], axis=1).astype(np.float32)
        return DeviceEvents(
            inputs=torch.from_numpy(self.features).to(device),
            targets=torch.from_numpy(targets).to(device),
            loss_mask=torch.ones(len(self.slot), dtype=torch.bool, device=device),
            offsets=torch.from_numpy(self.offsets).to(device),
            sizes=torch.from_numpy(self.sizes.astype(np.int64)).to(device),
        )


def renumber_slots(event: np.ndarray, slot: np.ndarray, min_hits: int) -> np.ndarray:
    """Slots 0..P-1 per event over the slots holding >= ``min_hits`` hits; -1 elsewhere.

    event, slot: [T] int (slot -1: no target). Vectorised: one np.unique over the pairs.
    """
    out = np.full(len(slot), -1, dtype=np.int64)
    target = slot >= 0
    if not target.any():
        return out
    pairs = np.stack([event[target], slot[target]], axis=1)
    unique, inverse, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    enough = counts >= min_hits
    # New slot = rank of the pair among its event's pairs with enough hits.
    ranks = np.cumsum(enough) - 1
    first_of_event = np.searchsorted(unique[:, 0], unique[:, 0], side="left")
    base = np.where(first_of_event > 0, np.cumsum(enough)[first_of_event - 1], 0)
    new = np.where(enough, ranks - base, -1)
    out[target] = new[inverse]
    return out


@dataclass
class SectorSplit:
    """The events of a HitSet cut into azimuth sectors (``split_sectors``).

    ``sectors``: one event per (event, sector), event-major, each holding the hits of its
    sector widened by the overlap on both sides (slots renumbered over the targets with
    ``min_hits`` hits in it); ``rows`` [R]: each sector hit's row in the original set;
    ``home`` [R] bool: the hit lies in the sector itself, not in its overlap margin.
    """

    sectors: HitSet
    rows: np.ndarray
    home: np.ndarray
    n_sectors: int


def split_sectors(hits: HitSet, n_sectors: int, overlap: float, min_hits: int) -> SectorSplit:
    """Cut every event of ``hits`` into ``n_sectors`` equal phi sectors, each widened by
    ``overlap`` rad on both sides (a track crossing an edge is whole in one of them as
    long as its phi span is below the overlap). Vectorised over hits and sectors."""
    phi = hits.features[:, FEATURES.index("phi")].astype(np.float64)
    width = 2 * np.pi / n_sectors
    home_sector = np.clip(((phi + np.pi) // width).astype(np.int64), 0, n_sectors - 1)
    centres = -np.pi + width * (np.arange(n_sectors) + 0.5)
    # [T, S] azimuth distance to each sector centre, wrapped into [0, pi].
    distance = np.abs((phi[:, None] - centres[None, :] + np.pi) % (2 * np.pi) - np.pi)
    member = distance <= width / 2 + overlap
    member[np.arange(len(phi)), home_sector] = True  # rounding at an edge: home always in
    row, sector = np.nonzero(member)
    event = hits.hit_event[row]
    order = np.lexsort((row, sector, event))  # event-major, then sector, then hit order
    row, sector, event = row[order], sector[order], event[order]
    sizes = np.bincount(event * n_sectors + sector, minlength=hits.n_events * n_sectors)
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    cut = hits._take(row, offsets, np.repeat(hits.event_id, n_sectors))
    cut.slot = renumber_slots(event * n_sectors + sector, cut.slot, min_hits)
    return SectorSplit(cut, row, sector == home_sector[row], n_sectors)


def event_hits(event: TrackMLEvent, cuts: TargetCuts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One event's hits in ``cuts.volumes`` with label and slot, and its particle kinematics.

    Returns (hits: hit_id, x, y, z, volume_id, layer_id, particle_id, weight, label, slot;
    particles: particle_id, pt, eta).
    """
    hits = event.hits.merge(event.truth[["hit_id", "particle_id", "weight"]], on="hit_id")
    hits = hits[hits["volume_id"].isin(cuts.volumes)].reset_index(drop=True)
    if hits.empty:
        raise UserError(f"{event.name}: no hits in volumes {list(cuts.volumes)}")
    kinematics = particle_kinematics(event.particles)
    counts = hits.loc[hits["particle_id"] > 0, "particle_id"].value_counts()
    chosen = kinematics[
        (kinematics["pt"] >= cuts.pt_min)
        & (kinematics["eta"].abs() < cuts.eta_max)
        & (kinematics["particle_id"].map(counts).fillna(0) >= cuts.min_hits)
    ]["particle_id"].to_numpy()
    slot_of = pd.Series(np.arange(len(chosen)), index=chosen)
    hits["slot"] = hits["particle_id"].map(slot_of).fillna(-1).astype(np.int64)
    hits["label"] = hits["slot"] >= 0
    return hits, kinematics


def hit_set_from_events(events: Sequence[TrackMLEvent], cuts: TargetCuts) -> HitSet:
    """A HitSet of ``events`` (each as ``event_hits`` cuts it)."""
    tables, particles = [], []
    for event in events:
        hits, kinematics = event_hits(event, cuts)
        tables.append(hits)
        particles.append(kinematics.assign(event_id=event.event_id))
    sizes = np.array([len(t) for t in tables], dtype=np.int64)
    table = pd.concat(tables, ignore_index=True)
    x, y, z = (table[c].to_numpy(np.float64) for c in ("x", "y", "z"))
    return HitSet(
        features=hit_features(x, y, z),
        hit_id=table["hit_id"].to_numpy(np.int64),
        particle_id=table["particle_id"].to_numpy(np.int64),
        volume_id=table["volume_id"].to_numpy(np.int64),
        layer_id=table["layer_id"].to_numpy(np.int64),
        weight=table["weight"].to_numpy(np.float64),
        label=table["label"].to_numpy(bool),
        slot=table["slot"].to_numpy(np.int64),
        offsets=np.r_[0, np.cumsum(sizes)].astype(np.int64),
        event_id=np.array([e.event_id for e in events], dtype=np.int64),
        particles=pd.concat(particles, ignore_index=True),
    )


def read_hit_set(directory: str, cuts: TargetCuts, max_events: int | None = None) -> HitSet:
    """The HitSet of the TrackML events in ``directory`` (sorted by event number)."""
    prefixes = list_events(directory)
    if not prefixes:
        raise UserError(f"{directory}: no TrackML events (eventNNNNNNNNN-hits.csv[.gz])")
    if max_events is not None:
        prefixes = prefixes[:max_events]
    return hit_set_from_events([read_event(p) for p in prefixes], cuts)


def feature_statistics(hits: HitSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation (>= 1e-6) of every feature over ``hits`` (training split)."""
    mean = hits.features.astype(np.float64).mean(axis=0)
    std = np.maximum(hits.features.astype(np.float64).std(axis=0), 1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
