"""Order statistics used by several rules."""

from __future__ import annotations

import numpy as np
import torch


def median(x: torch.Tensor, dim: int = -1, count: int | None = None) -> torch.Tensor:
    """Median along ``dim`` of the ``count`` smallest values (default: all of them); the
    mean of the two middle values for an even count (``torch.median`` returns the lower
    one). On CPU the two order statistics are selected (NumPy's introselect), not
    sorted: the repeated median's (n, K, K) slopes made the sort the rule's hot spot."""
    n = x.shape[dim] if count is None else count
    lo, hi = (n - 1) // 2, n // 2
    if x.device.type == "cpu":
        part = torch.from_numpy(np.partition(x.detach().numpy(), hi if lo == hi else (lo, hi), axis=dim))
    else:
        part = x.sort(dim=dim).values
    if lo == hi:
        return part.select(dim, hi)
    return (part.select(dim, lo) + part.select(dim, hi)) / 2


def coordinate_shares(order: torch.Tensor, kept: slice | torch.Tensor, k: int, scale: float) -> torch.Tensor:
    """Per-update share of a coordinate-wise rule: ``order`` is the (K, d) argsort of
    the values along dim 0; the sorted positions ``kept`` each contribute ``scale`` to
    the update that sits there; the result is averaged over the d coordinates."""
    picked = order[kept].reshape(-1)
    counts = torch.bincount(picked, minlength=k).to(torch.float64)
    return counts * scale / order.shape[1]
