"""TrackML truth weights: the rule published with trackml-library (phase 1 metric).

Per hit, weight = order weight x pT weight, normalised so an event's weights sum to 1:

* order weight: the hits of a particle are ranked by abs(tz - vz) (distance along z from
  the particle's vertex; ties get their average rank, then the integer part is taken, as
  in the library). A track of n hits (4 <= n, counted as 20 when longer) gets the weights
  of the proposal (10, 8, 6, 5, 3, 3, 3, 5, 6) stretched linearly over its n hits and
  normalised to sum 1; hits ranked 20 or later weigh 0. Particles with fewer than 4 hits
  weigh 0.
* pT weight: 0.2 up to pT = 0.5 GeV, rising linearly to 1 at 3 GeV, 1 above; 0 below
  0.05 GeV.
* noise hits (particle_id 0) weigh 0.

This is our own implementation of that published rule (no code copied).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ORDER_PROPOSAL = (10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0)
MIN_HITS = 4
MAX_HITS = 20


def order_weight_table() -> np.ndarray:
    """Order weights [MAX_HITS + 1, MAX_HITS]: row n (hits on the track), column rank."""
    table = np.zeros((MAX_HITS + 1, MAX_HITS))
    proposal = np.asarray(ORDER_PROPOSAL)
    for n in range(MIN_HITS, MAX_HITS + 1):  # 17 rows, built once
        positions = np.linspace(0.0, n - 1, len(proposal))
        row = np.interp(np.arange(n), positions, proposal)
        table[n, :n] = row / row.sum()
    return table


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """pT weight [n] of transverse momenta [n] (GeV)."""
    return np.interp(pt, [0.05, 0.5, 3.0], [0.2, 0.2, 1.0], left=0.0, right=1.0)


def truth_weights(particle_id: np.ndarray, tz: np.ndarray, particles: pd.DataFrame) -> np.ndarray:
    """Weights [n] of the truth rows (particle_id [n], tz [n] mm), summing to 1.

    ``particles`` needs particle_id, vz, px, py and nhits (the particle's number of hits);
    noise (particle_id 0) and particles absent from it weigh 0. All zero if nothing counts.
    """
    table = particles.set_index("particle_id")
    known = pd.Index(table.index).get_indexer(particle_id)
    valid = (known >= 0) & (particle_id != 0)
    idx = np.where(valid, known, 0)
    vz = table["vz"].to_numpy()[idx]
    nhits = np.where(valid, table["nhits"].to_numpy()[idx], 0)
    pt = np.hypot(table["px"].to_numpy(), table["py"].to_numpy())[idx]
    distance = np.abs(tz - vz)
    rank = (
        pd.Series(distance).groupby(particle_id).rank(method="average").to_numpy() - 1.0
    ).astype(np.int64)
    orders = order_weight_table()
    n_capped = np.minimum(nhits, MAX_HITS)
    usable = valid & (nhits >= MIN_HITS) & (rank < MAX_HITS)
    weight = np.where(usable, orders[n_capped, np.clip(rank, 0, MAX_HITS - 1)] * pt_weight(pt), 0.0)
    total = weight.sum()
    return weight / total if total > 0 else weight
