"""Order statistics used by several rules."""

from __future__ import annotations

import torch


def median(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Median along ``dim``; the mean of the two middle values for an even count
    (``torch.median`` returns the lower one)."""
    n = x.shape[dim]
    s = x.sort(dim=dim).values
    if n % 2:
        return s.select(dim, n // 2)
    return (s.select(dim, n // 2 - 1) + s.select(dim, n // 2)) / 2


def coordinate_shares(order: torch.Tensor, kept: slice | torch.Tensor, k: int, scale: float) -> torch.Tensor:
    """Per-update share of a coordinate-wise rule: ``order`` is the (K, d) argsort of
    the values along dim 0; the sorted positions ``kept`` each contribute ``scale`` to
    the update that sits there; the result is averaged over the d coordinates."""
    picked = order[kept].reshape(-1)
    counts = torch.bincount(picked, minlength=k).to(torch.float64)
    return counts * scale / order.shape[1]
