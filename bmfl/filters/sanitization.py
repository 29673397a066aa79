"""Adjacent-distance data sanitization for time series (poisoning study `001` §V-A, Eq. 3).

For a sample with history x[0] … x[J] (x[0] = v_{t−1}, x[1] = v_{t−2}, …) and target
y = v_t, the adjacent distance is |y − x[0]| + Σ_{j<J} |x[j] − x[j+1]|. Natural traffic
rarely jumps between adjacent time points, so the samples with the top p fraction of
adjacent distances are dropped. This runs on a vehicle's (or the publisher's) data, not
on uploads. Histories stored oldest-first (x[..., -1] = v_{t−1}) pass ``newest_first=False``.
"""

from __future__ import annotations

import math

import torch

from bmfl.data.base import TensorData


def adjacent_distance(x: torch.Tensor, y: torch.Tensor, newest_first: bool = True) -> torch.Tensor:
    """Eq. 3 per sample; ``x`` (N, J+1) or (N, J+1, 1), ``y`` (N,) or (N, 1)."""
    hist = x.reshape(x.shape[0], -1).to(torch.float64)
    if not newest_first:
        hist = hist.flip(1)
    target = y.reshape(y.shape[0], -1).to(torch.float64)
    if target.shape[1] != 1:
        raise ValueError("adjacent distance needs a single target value per sample")
    return (target[:, 0] - hist[:, 0]).abs() + (hist[:, :-1] - hist[:, 1:]).abs().sum(1)


def sanitize(data: TensorData, fraction: float, newest_first: bool = True) -> tuple[TensorData, torch.Tensor]:
    """Drop the ⌈fraction·N⌉ samples with the largest adjacent distance (ties: the later
    index goes first); returns the kept data and the boolean keep mask."""
    if not 0 <= fraction < 1:
        raise ValueError("fraction must be in [0, 1)")
    dist = adjacent_distance(data.x, data.y, newest_first)
    n_drop = math.ceil(fraction * len(data))
    keep = torch.ones(len(data), dtype=torch.bool)
    if n_drop:
        order = torch.sort(dist, descending=True, stable=True).indices
        keep[order[:n_drop]] = False
    return data.subset(torch.nonzero(keep).flatten()), keep
