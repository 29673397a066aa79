"""FedAvg (BMFL Eq. 3; FBFL): the data-size weighted mean, w = Σ_m p_m w̃_m with
p_m = |O_m| / Σ_i |O_i|. Also the cloud's second aggregation (docs/algorithms.md §4)."""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator


@register_aggregator("fedavg")
class FedAvg(Aggregator):
    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        total = sizes.sum()
        if total <= 0:
            raise ValueError("FedAvg needs a positive total data size")
        weights = sizes / total
        aggregate = (weights.to(updates.dtype)[:, None] * updates).sum(0)
        return AggregationResult(aggregate, weights, {})
