"""Coordinate-wise trimmed mean (Yin et al. 2018; `001` §V-C): per coordinate, drop the
β largest and β smallest of the K values and average the remaining K − 2β. β = 0 is
the plain (unweighted) mean; 2β ≥ K is an error."""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.aggregation.stats import coordinate_shares


@register_aggregator("trimmed_mean")
class TrimmedMean(Aggregator):
    """``beta``: values trimmed at each end per coordinate (an int), or, when
    ``beta_fraction`` is given instead, ⌊beta_fraction · K⌋."""

    def __init__(self, beta: int | None = None, beta_fraction: float | None = None) -> None:
        if (beta is None) == (beta_fraction is None):
            raise ValueError("give exactly one of beta or beta_fraction")
        if beta is not None and beta < 0 or beta_fraction is not None and not 0 <= beta_fraction < 0.5:
            raise ValueError("beta must be >= 0 and beta_fraction in [0, 0.5)")
        self.beta = beta
        self.beta_fraction = beta_fraction

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        beta = self.beta if self.beta is not None else int(self.beta_fraction * k)
        if 2 * beta >= k:
            raise ValueError(f"cannot trim {beta} from each end of {k} updates")
        values, order = updates.sort(dim=0, stable=True)
        kept = slice(beta, k - beta)
        aggregate = values[kept].mean(0)
        weights = coordinate_shares(order, kept, k, 1.0 / (k - 2 * beta))
        return AggregationResult(aggregate, weights, {"beta": beta})
