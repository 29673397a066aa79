"""Nearest-neighbour mixing, then the geometric median of the DP-SGD signals (issue 17;
docs/algorithms.md §8.5).

Under heterogeneous data a robust rule cannot tell an attacker from an honest outlier,
and what an attacker can shift the aggregate by grows with the honest uploads' spread
(Karimireddy, He and Jaggi, ICLR 2022; Allouah et al., NeurIPS 2023). Nearest-neighbour
mixing (NNM; Allouah et al., "Fixing by Mixing", AISTATS 2023) shrinks that spread
before the robust step: each upload is replaced by the mean of its K − f nearest
uploads (itself included), f = ⌊(K − 1)/2⌋, then the rule takes the geometric median
of the K mixed vectors. Under DP-SGD distances are measured between the *signals*, with
the noise taken out of the Gram matrix (``signal_median``: H = G − diag(d·v_m)); mixing
is linear, so the mixed signals' Gram matrix is M H Mᵀ for the mixing matrix M, and the
median Σ_j β_j (mixed)_j = Σ_i (βᵀM)_i Δ_i is a convex combination of the uploads,
whose weights are the result's (docs/algorithms.md §8.5). A declared data size enters
only through the noise variance it implies for the correction, never as a weight.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.filters.signal_median import SignalMedian, geometric_median_weights
from bmfl.task import TrainingSpec


@register_aggregator("mixed_median")
class MixedMedian(Aggregator):
    needs = frozenset({"training", "count_noise"})

    def __init__(self, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0) -> None:
        self._signals = SignalMedian(training, count_noise)

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        h, allowance = self._signals.corrected_gram(updates, sizes, reference)
        near = k - (k - 1) // 2
        diag = h.diagonal()
        distance = (diag[:, None] + diag[None, :] - 2 * h).clamp_min(0.0)
        distance.fill_diagonal_(-1.0)  # each upload is its own nearest, whatever the noise in the others' distances
        mixing = torch.zeros(k, k, dtype=torch.float64)
        rows = torch.arange(k)[:, None]
        mixing[rows, distance.argsort(dim=1, stable=True)[:, :near]] = 1.0 / near
        floor = math.sqrt(float(allowance.mean()) / near) if bool((allowance > 0).all()) else 1e-12
        beta = geometric_median_weights(mixing @ h @ mixing.T, floor)
        weights = beta @ mixing
        aggregate = torch.mv(updates.T.to(torch.float64), weights).to(updates.dtype)
        return AggregationResult(aggregate, weights, {"mixing": mixing, "beta": beta})
