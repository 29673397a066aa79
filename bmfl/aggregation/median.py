"""Coordinate-wise median (Yin et al. 2018; `001` §V-C). For an even K the two middle
values are averaged."""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.aggregation.stats import coordinate_shares


@register_aggregator("median")
class CoordinateMedian(Aggregator):
    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        values, order = updates.sort(dim=0, stable=True)
        if k % 2:
            kept, share = slice(k // 2, k // 2 + 1), 1.0
            aggregate = values[k // 2]
        else:
            kept, share = slice(k // 2 - 1, k // 2 + 1), 0.5
            aggregate = (values[k // 2 - 1] + values[k // 2]) / 2
        return AggregationResult(aggregate, coordinate_shares(order, kept, k, share), {})
