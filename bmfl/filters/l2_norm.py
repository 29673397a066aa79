"""L2-norm anomaly detection (poisoning study `001` §V-D).

With n_m = ‖w̃_m − w^{r-1}‖₂ the norm of each upload's update, μ = med(n) and
σ = med(|n − μ|), an upload is flagged when n_m > c1·μ or n_m > μ + c2·σ
(c1 = 40, c2 = 400 in the paper). The thresholds are relative to the round's own
uploads, so with a majority of large (attacking) updates μ itself moves.
"""

from __future__ import annotations

import torch

from bmfl.aggregation.stats import median
from bmfl.filters.base import FilterResult, UpdateFilter, register_filter


def norm_bounds(norms: torch.Tensor, c1: float, c2: float) -> tuple[float, float]:
    """(c1·μ, μ + c2·σ) for the given update norms."""
    mu = median(norms)
    sigma = median((norms - mu).abs())
    return float(c1 * mu), float(mu + c2 * sigma)


@register_filter("l2_norm")
class L2NormDetector(UpdateFilter):
    def __init__(self, c1: float = 40.0, c2: float = 400.0) -> None:
        if c1 <= 0 or c2 <= 0:
            raise ValueError("c1 and c2 must be positive")
        self.c1 = c1
        self.c2 = c2

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        norms = (updates.to(torch.float64) - reference.to(torch.float64)).norm(dim=1)
        bound1, bound2 = norm_bounds(norms, self.c1, self.c2)
        keep = (norms <= bound1) & (norms <= bound2)
        return FilterResult(keep, {"norms": norms, "bound_c1": bound1, "bound_c2": bound2})
