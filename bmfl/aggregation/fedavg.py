"""FedAvg (BMFL Eq. 3; FBFL): the data-size weighted mean, w = Σ_m p_m w̃_m with
p_m = |O_m| / Σ_i |O_i|. Also the cloud's second aggregation (docs/algorithms.md §4).

Data sizes are declared, not proven: a vehicle registers any count it likes. With
``cap="median"`` each size counts at most as much as the (lower) median size among the
uploads aggregated, p_m ∝ min(|O_m|, med_i |O_i|), so declaring a huge size buys no more
weight than a typical vehicle has, and declaring a small one (which widens the DP noise
an edge expects of it, ``dp_envelope``) only lowers the declarer's own weight. The edges'
sample counts sent to the cloud are capped the same way (``bmfl.rounds.edge``)."""

from __future__ import annotations

from typing import Literal

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator

CAPS = ("none", "median")


def median_capped(sizes: torch.Tensor) -> torch.Tensor:
    """min(n_m, n_med) with n_med the lower median of ``sizes`` (no size counts for more
    than the median one; a majority of the sizes must rise to move the cap)."""
    return sizes.clamp(max=float(sizes.median()))


@register_aggregator("fedavg")
class FedAvg(Aggregator):
    def __init__(self, cap: Literal["none", "median"] = "none") -> None:
        if cap not in CAPS:
            raise ValueError(f"cap must be one of {CAPS}")
        self.cap = cap

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        if self.cap == "median":
            sizes = median_capped(sizes)
        total = sizes.sum()
        if total <= 0:
            raise ValueError("FedAvg needs a positive total data size")
        weights = sizes / total
        aggregate = (weights.to(updates.dtype)[:, None] * updates).sum(0)
        return AggregationResult(aggregate, weights, {})
