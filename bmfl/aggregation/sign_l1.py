"""BAFDP's L1-regularised aggregation (seed ``000``, Mechanism 2), in the sign form of
RSA (Li et al. 2019, Eq. 11): the server step on the L1-penalised objective
f_0(w) + λ Σ_m ‖w − w_m‖₁ is

    w ← w − η (∇f_0(w) + λ Σ_m sign(w − w̃_m)),

taken once from the reference w^{r-1}. The aggregator holds no data, so f_0 = 0. Each
upload moves each coordinate by at most ηλ whatever its size, so a few far outliers
cannot drag the model further than their count allows (docs/algorithms.md, "L1 sign
aggregation")."""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator


@register_aggregator("sign_l1")
class SignL1(Aggregator):
    """``lr``: η, the server step; ``lam``: λ, the L1 penalty weight."""

    def __init__(self, lr: float = 1.0, lam: float = 1e-3) -> None:
        if lr <= 0 or lam <= 0:
            raise ValueError("sign_l1 needs lr > 0 and lam > 0")
        self.lr, self.lam = lr, lam

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        step = self.lr * self.lam * torch.sign(reference[None, :] - updates).sum(0)
        return AggregationResult(reference - step, torch.full((k,), 1.0 / k, dtype=torch.float64), {})
