"""Inverse-noise averaging: FedAvg with each upload weighted by the precision of its DP
noise instead of its declared data size (docs/algorithms.md §4.2).

Under DP-SGD an honest update is Δ_m = s_m + n_m with n_m ~ N(0, v_m I), v_m the noise
variance the task's training implies for the vehicle's data size (``dp_floor``:
v = η²(σC/B)² Σ_s c_s², B = q·n the expected batch). Averaging w = Σ_m p_m w̃_m with

    p_m = (1/v_m) / Σ_i (1/v_i)

gives the aggregate the least noise variance Σ_m p_m² v_m among weightings of equally
informative updates (inverse-variance weighting). It also bounds what a declared size
buys: v_m falls as the declared size grows only until the batch reaches its cap
(B = min(batch_size, q_max·n)), so declaring 2³² − 1 samples weighs no more than any
vehicle with a full batch, and declaring a tiny size, which widens the noise
``dp_envelope`` admits (its standard deviation grows as 1/n), shrinks the declarer's
weight as 1/v_m, so its weighted push falls as √v_m/v_m = 1/√v_m.

With noisy declared counts (``count_noise`` > 0) v_m is taken at the largest variance
the count allows, as the envelope's upper bounds are. Without DP (v = 0) there is no
noise to weigh by, and each size counts at most as much as the median one
(``fedavg`` with ``cap="median"``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.aggregation.fedavg import median_capped
from bmfl.filters.dp_floor import noise_config, variance_range
from bmfl.task import TrainingSpec

Z = 4.0
"""How far (in count-noise standard deviations) a declared count may sit from the size."""


@register_aggregator("noise_weighted")
class NoiseWeighted(Aggregator):
    needs = frozenset({"training", "count_noise"})

    def __init__(self, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0) -> None:
        if count_noise < 0:
            raise ValueError("count_noise must be non-negative")
        self.count_noise = count_noise
        self._config = noise_config(training, self.name)

    def precisions(self, sizes: torch.Tensor) -> torch.Tensor | None:
        """(K,) 1/v_m at the largest variance each declared size allows; None without DP."""
        variances = [variance_range(self._config, max(1, int(n)), self.count_noise, Z)[1] for n in sizes.tolist()]
        if not all(v > 0 for v in variances):
            return None
        return 1.0 / torch.tensor(variances, dtype=torch.float64)

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        precision = self.precisions(sizes)
        raw = median_capped(sizes) if precision is None else precision
        weights = raw / raw.sum()
        aggregate = torch.mv(updates.T, weights.to(updates.dtype))
        return AggregationResult(aggregate, weights, {"basis": "sizes" if precision is None else "noise"})
