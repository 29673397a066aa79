"""Centered clipping (Karimireddy, He & Jaggi, ICML 2021, "Learning from History for
Byzantine Robust Optimization", §4, Eq. 2 and Alg. 2 without momentum).

With Δ_m = w̃_m − w^{r-1} and a centre v_0, L iterations of

    v_{l+1} = v_l + Σ_m p_m · (Δ_m − v_l) · min(1, τ / ‖Δ_m − v_l‖)     (Eq. 2)

and w = w^{r-1} + v_L, p_m the data-size shares as in FedAvg. An upload far from the
centre moves it by at most p_m·τ per iteration, whatever it sends.

The paper centres on the previous aggregate (server momentum), a history the edge rule
does not receive: an aggregator sees only the uploads, their sizes and w^{r-1}, and must
be a pure function of them so the re-execution audit can replay it. We start from the
coordinate-wise median of the Δ_m instead (a centre no minority can move far) and set τ
scale-free: ``factor`` × the median of ‖Δ_m − v_0‖ (under DP the honest distances are
all close to √(d·v), so τ adapts to the noise without tuning). ``iterations`` = L
(the paper uses 1 with momentum, more without). θ_m is p_m times the mean over
iterations of the clipping factor, normalised to sum to 1 (a diagnostic: every upload
enters the aggregate; none is left out by the rule).
"""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator


def centered_clip(deltas: torch.Tensor, shares: torch.Tensor, centre: torch.Tensor, tau: float,
                  iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_L, mean clipping factor per row) after ``iterations`` steps of Eq. 2."""
    v = centre.clone()
    factors = torch.zeros(len(deltas), dtype=deltas.dtype)
    for _ in range(iterations):
        diff = deltas - v
        factor = torch.clamp(tau / diff.norm(dim=1).clamp_min(1e-30), max=1.0)
        v = v + (shares[:, None] * factor[:, None] * diff).sum(0)
        factors += factor / iterations
    return v, factors


@register_aggregator("centered_clip")
class CenteredClip(Aggregator):
    def __init__(self, factor: float = 1.0, iterations: int = 3) -> None:
        if factor <= 0 or iterations < 1:
            raise ValueError("need factor > 0 and iterations >= 1")
        self.factor = factor
        self.iterations = iterations

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        total = float(sizes.sum())
        if total <= 0:
            raise ValueError("centered clipping needs a positive total data size")
        ref = reference.to(torch.float64)
        deltas = updates.to(torch.float64) - ref
        shares = sizes / total
        centre = deltas.median(dim=0).values if len(deltas) > 2 else deltas.mean(dim=0)
        tau = self.factor * float((deltas - centre).norm(dim=1).median())
        v, factors = centered_clip(deltas, shares, centre, tau, self.iterations)
        theta = shares * factors
        theta = theta / theta.sum() if float(theta.sum()) > 0 else shares
        return AggregationResult((ref + v).to(updates.dtype), theta, {"tau": tau, "clip_factor": factors})
