"""Norm bounding with an adaptive bound (Sun et al. 2019, "Can you really backdoor
federated learning?", §4; the median bound of FLAME, Nguyen et al. 2022, Alg. 1 l. 9–11).

Each update Δ_m = w̃_m − w^{r-1} is scaled to at most the bound B:
Δ_m ← Δ_m · min(1, B/‖Δ_m‖), with B = ``factor`` · median_m ‖Δ_m‖ (the median update
norm of the round, which honest uploads set while they are the majority) or a fixed
``bound``. Every upload is kept; the filter passes the clipped uploads on
(``FilterResult.updates``). The bound scales with the model, the learning rate and the
DP noise by construction, so it needs no tuning per task.
"""

from __future__ import annotations

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter


def clip_updates(deltas: torch.Tensor, bound: float) -> torch.Tensor:
    """(K, d) ``deltas`` each scaled to norm at most ``bound``."""
    scale = torch.clamp(bound / deltas.norm(dim=1).clamp_min(1e-12), max=1.0)
    return deltas * scale[:, None]


@register_filter("norm_clip")
class NormClip(UpdateFilter):
    def __init__(self, factor: float = 1.0, bound: float | None = None) -> None:
        if factor <= 0 or (bound is not None and bound <= 0):
            raise ValueError("factor and bound must be positive")
        self.factor = factor
        self.bound = bound

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        ref = reference.to(torch.float64)
        deltas = updates.to(torch.float64) - ref
        norms = deltas.norm(dim=1)
        bound = self.bound if self.bound is not None else self.factor * float(norms.median())
        clipped = clip_updates(deltas, bound)
        keep = torch.ones(len(updates), dtype=torch.bool)
        info = {"norms": norms, "bound": bound, "clipped": norms > bound}
        return FilterResult(keep, info, updates=(ref + clipped).to(updates.dtype))
