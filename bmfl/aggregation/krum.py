"""Krum and Multi-Krum (Blanchard et al. 2017; FBFL; poisoning study `001` §V-C).

score_i = Σ of the squared Euclidean distances from w̃_i to its n − f − 2 nearest other
updates, f the number of Byzantine updates the rule is sized for. Krum returns the
update with the lowest score; Multi-Krum averages (unweighted) the m lowest-scoring
updates. Ties go to the lower index.
"""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator


def krum_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Score of each update (float64), needing n − f − 2 ≥ 1 neighbours."""
    n = updates.shape[0]
    neighbours = n - f - 2
    if f < 0 or neighbours < 1:
        raise ValueError(f"Krum needs n - f - 2 >= 1 (n={n}, f={f})")
    x = updates.to(torch.float64)
    norms = x.pow(2).sum(1)
    sq = (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_min(0)
    sq.fill_diagonal_(float("inf"))
    return sq.sort(dim=1).values[:, :neighbours].sum(1)


def default_f(n: int) -> int:
    """The largest f Krum tolerates: n > 2f + 2."""
    return max(0, (n - 3) // 2)


@register_aggregator("multi_krum")
class MultiKrum(Aggregator):
    """``f``: Byzantine updates assumed (default: the largest Krum tolerates,
    ⌊(n − 3)/2⌋); ``m``: updates averaged (default n − f)."""

    def __init__(self, f: int | None = None, m: int | None = None) -> None:
        self.f = f
        self.m = m

    def _count(self, n: int, f: int) -> int:
        return n - f if self.m is None else self.m

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        n = updates.shape[0]
        if n == 1:
            return AggregationResult(updates[0].clone(), torch.ones(1, dtype=torch.float64), {"selected": [0]})
        f = default_f(n) if self.f is None else self.f
        m = self._count(n, f)
        if not 1 <= m <= n:
            raise ValueError(f"m must be in [1, {n}], got {m}")
        scores = krum_scores(updates, f)
        # stable sort: equal scores keep index order
        selected = torch.sort(scores, stable=True).indices[:m]
        weights = torch.zeros(n, dtype=torch.float64)
        weights[selected] = 1.0 / m
        aggregate = updates[selected].mean(0)
        return AggregationResult(aggregate, weights, {"scores": scores, "selected": selected.tolist(), "f": f})


@register_aggregator("krum")
class Krum(MultiKrum):
    """Multi-Krum with m = 1."""

    def __init__(self, f: int | None = None) -> None:
        super().__init__(f=f, m=1)
