"""Divide-and-conquer (DnC; Shejwalkar & Houmansadr, NDSS 2021, §V, Alg. 2).

Repeated ``iterations`` times: draw ``subsample`` coordinates at random; centre the
updates Δ_m = w̃_m − w^{r-1} on those coordinates by their mean; take the top right
singular vector v of the centred (K, b) matrix; score each upload by its squared
projection s_m = ⟨Δ_m − μ, v⟩²; keep the K − c·f uploads with the lowest scores. An
upload is kept when every iteration kept it. f = ⌊``fraction`` · K⌋ is the number of
attackers the edge is sized for (the paper assumes it known; c = ``filtering`` = 1).
The coordinate draws come from a generator keyed by (``seed``, round), so an auditor
re-executing the edge's decision draws the same.
"""

from __future__ import annotations

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter


def dnc_keep(deltas: torch.Tensor, removed: int, subsample: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """(K,) bool: the uploads every iteration kept (``removed`` dropped per iteration)."""
    k, d = deltas.shape
    keep = torch.ones(k, dtype=torch.bool)
    if removed <= 0:
        return keep
    for _ in range(iterations):
        cols = torch.randperm(d, generator=generator)[: min(subsample, d)]
        x = deltas[:, cols]
        centred = x - x.mean(dim=0)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scores = (centred @ v).pow(2)
        worst = torch.sort(scores, descending=True, stable=True).indices[:removed]
        keep[worst] = False
    return keep


@register_filter("dnc")
class DivideAndConquer(UpdateFilter):
    def __init__(
        self, fraction: float = 0.4, filtering: float = 1.0, subsample: int = 10_000, iterations: int = 5, seed: int = 0
    ) -> None:
        if not 0 <= fraction < 1 or filtering <= 0 or subsample < 1 or iterations < 1:
            raise ValueError("need fraction in [0, 1), filtering > 0, subsample >= 1, iterations >= 1")
        self.fraction = fraction
        self.filtering = filtering
        self.subsample = subsample
        self.iterations = iterations
        self.seed = seed

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        deltas = updates.to(torch.float64) - reference.to(torch.float64)
        k = len(updates)
        removed = min(k - 1, int(self.filtering * int(self.fraction * k)))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        keep = dnc_keep(deltas, removed, self.subsample, self.iterations, generator)
        return FilterResult(keep, {"removed_per_iteration": removed})
