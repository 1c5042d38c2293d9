"""Hand-built events and an exact "oracle" model shared by several test modules."""

from __future__ import annotations

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
