"""DP-FedAvg at an edge (McMahan et al. 2018, user-level DP): each upload's change
Δ_m = w̃_m − w^{r-1} is clipped to norm C, the clipped changes are summed, Gaussian noise
N(0, σ²C² I) is added to the sum and the result divided by the number of uploads K:
w = w^{r-1} + (Σ_m Δ_m · min(1, C/‖Δ_m‖) + N(0, σ²C²)) / K. Every upload weighs 1/K
(weighting by data size would let one vehicle's count scale its influence).

The noise is always secret (``bmfl.privacy.SecureGenerator``): the cloud, other edges
and vehicles must not be able to replay it. ``result.info`` carries the user-level ε
after ``round_index`` rounds (``bmfl.privacy.user_level``). It protects vehicles against
whoever sees the edge's output, not against the edge itself, which sees every update.
"""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.privacy.noise import SecureGenerator, gaussian
from bmfl.privacy.user_level import user_level_epsilon


def clipped_mean(updates: torch.Tensor, reference: torch.Tensor, clip: float) -> torch.Tensor:
    """w^{r-1} + Σ_m Δ_m · min(1, C/‖Δ_m‖) / K: the rule's output without its noise."""
    deltas = updates - reference
    factors = (clip / deltas.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
    return reference + (factors[:, None] * deltas).sum(0) / updates.shape[0]


@register_aggregator("dp_fedavg")
class DpFedAvg(Aggregator):
    name = "dp_fedavg"

    def __init__(self, clip: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5,
                 sampling_rate: float = 1.0) -> None:  # fmt: skip
        if not clip > 0 or not noise_multiplier > 0:
            raise ValueError("dp_fedavg needs clip > 0 and noise_multiplier > 0")
        if not 0 < delta < 1 or not 0 < sampling_rate <= 1:
            raise ValueError("dp_fedavg needs delta in (0, 1) and sampling_rate in (0, 1]")
        self.clip, self.noise_multiplier, self.delta, self.sampling_rate = clip, noise_multiplier, delta, sampling_rate
        self._round = 1

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> AggregationResult:
        self._round = round_index
        return super().__call__(updates, sizes, reference, round_index=round_index)

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        norms = (updates - reference).norm(dim=1)
        noise = gaussian(reference.shape, self.noise_multiplier * self.clip, SecureGenerator())
        aggregate = clipped_mean(updates, reference, self.clip) + noise.to(reference.device) / k
        info = {
            "clipped": int((norms > self.clip).sum()),
            "user_level_epsilon": user_level_epsilon(self.noise_multiplier, self._round, self.delta, self.sampling_rate),
            "user_level_delta": self.delta,
        }
        return AggregationResult(aggregate, torch.full((k,), 1.0 / k, dtype=torch.float64), info)
