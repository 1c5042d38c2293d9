"""Device batching: an EventSet's normalised tensors on the device, cut into batches.

``DeviceEvents`` (normalised torch tensors on the training device) -> ``Batch``: events
padded to the batch's largest (``padded_batch``) or packed back to back with no padding
(``packed_batch``), the memory layout described by the batch's ``AttentionLayout``.
``batch_event_indices`` groups events into batches (a fixed event count or a hit budget,
size-sorted) and ``BatchPlan`` uploads an epoch's batches to the device once.

This is the only data module that knows attention layouts (``custom_encoder``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from custom_encoder import AttentionLayout
from data_processing.dataset import EventSet, Normaliser


@dataclass
class DeviceEvents:
    """An EventSet's normalised arrays as torch tensors on one device.

    Keeping the whole set on the device lets a batch be gathered with a few index ops
    instead of a host-to-device copy per step.
    """

    inputs: Tensor  # [T, F] float32
    targets: Tensor  # [T, K] float32
    loss_mask: Tensor  # [T] bool: hits that carry a target (not noise)
    offsets: Tensor  # [E + 1] int64
    sizes: Tensor  # [E] int64

    @classmethod
    def from_events(
        cls, events: EventSet, normaliser: Normaliser, device: torch.device | str = "cpu"
    ) -> DeviceEvents:
        targets = normaliser.normalise_targets(events.targets)
        track = events.particle_id != 0
        targets[~track] = 0.0
        return cls(
            inputs=torch.from_numpy(normaliser.normalise_inputs(events.inputs)).to(device),
            targets=torch.from_numpy(targets).to(device),
            loss_mask=torch.from_numpy(track).to(device),
            offsets=torch.from_numpy(events.offsets).to(device),
            sizes=torch.from_numpy(events.sizes).to(device),
        )

    @property
    def n_events(self) -> int:
        return len(self.sizes)


@dataclass
class Batch:
    """Events of one step, padded or packed; ``layout`` says which.

    Padded (``layout.is_packed`` False): x [B, N, F]; y [B, N, K]; loss_mask [B, N] real
    hits with a target; layout.pad_mask [B, N] True at padding; rows [B, N] flat hit row
    of each position in the DeviceEvents (-1 at padding), to scatter predictions back.

    Packed: x [T, F]; y [T, K]; loss_mask [T] hits with a target; layout with
    cu_seqlens [B + 1] int32 and max_seqlen; rows [T] flat hit row of each packed hit.
    """

    x: Tensor
    y: Tensor
    loss_mask: Tensor
    layout: AttentionLayout
    rows: Tensor


def padded_batch(
    data: DeviceEvents, event_index: Tensor, n_max: int | None = None, pad_value: float = 0.0
) -> Batch:
    """Gather the events ``event_index`` ([B] positions) into a padded batch.

    Vectorised: one gather for all events; the pad value never reaches a real hit's
    output because padding keys are masked in attention. Pass ``n_max`` (the largest
    event size of the batch, known on the host) to avoid a device-to-host sync.
    """
    sizes = data.sizes[event_index]
    if n_max is None:
        n_max = int(sizes.max())
    slot = torch.arange(n_max, device=sizes.device)
    real = slot[None, :] < sizes[:, None]
    rows = data.offsets[event_index][:, None] + slot[None, :]
    rows = torch.where(real, rows, torch.zeros_like(rows))
    x = data.inputs[rows].masked_fill(~real[..., None], pad_value)
    y = data.targets[rows].masked_fill(~real[..., None], 0.0)
    loss_mask = data.loss_mask[rows] & real
    return Batch(
        x=x,
        y=y,
        loss_mask=loss_mask,
        layout=AttentionLayout(pad_mask=~real),
        rows=torch.where(real, rows, torch.full_like(rows, -1)),
    )


def packed_batch(
    data: DeviceEvents,
    event_index: Tensor,
    n_hits: int | None = None,
    max_len: int | None = None,
) -> Batch:
    """Gather the events ``event_index`` ([B] positions) into a packed batch.

    Vectorised, one gather for all events. Pass ``n_hits`` (sum of the events' sizes)
    and ``max_len`` (their maximum), known on the host, to avoid device-to-host syncs.
    """
    sizes = data.sizes[event_index]
    if n_hits is None:
        n_hits = int(sizes.sum())
    if max_len is None:
        max_len = int(sizes.max())
    # The kernels need only an upper bound of the longest event. Rounding it up to a
    # power of two keeps torch.compile from specialising (recompiling) on every value.
    max_len = 1 << max(4, (max_len - 1).bit_length())
    layout = AttentionLayout.packed(sizes, max_len, n_hits)
    # slots = event * max_len + position within the event (see AttentionLayout.packed).
    rows = data.offsets[event_index][layout.slots // max_len] + layout.slots % max_len
    return Batch(
        x=data.inputs[rows],
        y=data.targets[rows],
        loss_mask=data.loss_mask[rows],
        layout=layout,
        rows=rows,
    )


def batch_event_indices(
    sizes: np.ndarray,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    sort_window: int = 50,
    hits_per_batch: int = 0,
) -> list[np.ndarray]:
    """Split event positions into batches.

    Args:
        sizes: [E] hits per event.
        batch_size: events per batch (used when ``hits_per_batch`` is 0).
        shuffle: draw a new random order (from ``rng``) of events and of batches.
        rng: the seeded generator for the shuffles.
        sort_window: with ``sort_window > 1``, events are (after shuffling) sorted by
            size within windows of ``sort_window`` batches and batches are cut inside a
            window, so each batch holds events of similar size and little compute goes
            to padding; the batch order is then shuffled again. ``sort_window=1`` gives
            plain random batches.
        hits_per_batch: if > 0, a hit budget: each batch holds as many events as fit in
            ``hits_per_batch`` hits in total (an event larger than the budget forms a
            batch on its own), instead of ``batch_size`` events.

    Returns:
        Arrays of event positions, every event exactly once.
    """
    n = len(sizes)
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    if hits_per_batch > 0:
        mean_size = max(1.0, float(np.mean(sizes))) if n else 1.0
        events_per_batch = max(1, int(hits_per_batch / mean_size))
    else:
        events_per_batch = batch_size
    window = events_per_batch * max(1, sort_window)
    batches: list[np.ndarray] = []
    for begin in range(0, n, window):
        chunk = order[begin : begin + window]
        if sort_window > 1:
            chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        if hits_per_batch > 0:
            cuts = _hit_budget_cuts(sizes[chunk], hits_per_batch)
        else:
            cuts = np.arange(batch_size, len(chunk), batch_size)
        batches.extend(np.split(chunk, cuts))
    if shuffle and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _hit_budget_cuts(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Greedy split points of ``sizes`` (in order) so that each part sums to <= budget.

    One ``searchsorted`` per batch, not per event.
    """
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    cuts = []
    start = 0
    while start < len(sizes):
        # Largest end with cumulative[end] - cumulative[start] <= budget; at least one event.
        end = int(np.searchsorted(cumulative, cumulative[start] + budget, side="right")) - 1
        start = max(end, start + 1)
        cuts.append(start)
    return np.asarray(cuts[:-1], dtype=np.int64)


@dataclass
class BatchPlan:
    """An epoch's batches, uploaded to the device in one copy.

    Batch i holds the events ``index[starts[i]:starts[i + 1]]`` (positions in a
    DeviceEvents); ``n_hits[i]`` and ``max_len[i]`` are the batch's total and largest
    event size, kept on the host, so building a batch never waits for the device.
    """

    index: Tensor  # [sum of batch sizes] int64, on the data's device
    starts: np.ndarray  # [n_batches + 1] int64
    n_hits: np.ndarray  # [n_batches] int64
    max_len: np.ndarray  # [n_batches] int64

    @classmethod
    def from_batches(
        cls, batches: list[np.ndarray], sizes: np.ndarray, device: torch.device | str
    ) -> BatchPlan:
        """Plan ``batches`` (arrays of event positions) of events with host ``sizes``."""
        lengths = [len(b) for b in batches]
        flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        batch_of_event = np.repeat(np.arange(len(batches)), lengths)
        event_sizes = sizes[flat]
        n_hits = np.bincount(batch_of_event, weights=event_sizes, minlength=len(batches))
        max_len = np.zeros(len(batches), dtype=np.int64)
        np.maximum.at(max_len, batch_of_event, event_sizes)
        return cls(
            index=torch.as_tensor(flat, dtype=torch.int64).to(device),
            starts=starts,
            n_hits=n_hits.astype(np.int64),
            max_len=max_len,
        )

    def __len__(self) -> int:
        return len(self.starts) - 1

    def batch(self, data: DeviceEvents, i: int, packed: bool) -> Batch:
        """Batch ``i`` of ``data``, packed or padded."""
        index = self.index[int(self.starts[i]) : int(self.starts[i + 1])]
        if packed:
            return packed_batch(data, index, int(self.n_hits[i]), int(self.max_len[i]))
        return padded_batch(data, index, int(self.max_len[i]))
