"""FLTrust (Cao et al., NDSS 2021, Alg. 1 and Eq. 2–4): trust scores against a root update
the edge trains itself (docs/algorithms.md §8.2).

With Δ_m = w̃_m − w^{r-1} and g_0 the edge's own update from w^{r-1} on its root data:

    TS_m = ReLU(cos(Δ_m, g_0))                       (Eq. 2)
    Δ̂_m = Δ_m · ‖g_0‖ / ‖Δ_m‖                        (Eq. 3)
    w = w^{r-1} + Σ_m TS_m · Δ̂_m / Σ_m TS_m          (Eq. 4)

θ_m = TS_m / Σ TS: an upload pointing away from g_0 gets weight 0 (flagged by the rule,
``rule:fltrust``); if every upload does, w = w^{r-1}. The data size plays no part, as in
the paper: the normalisation (Eq. 3) stops a large update from buying weight. The root
update comes from ``root_update`` (w^{r-1} → the model after training on the root data),
which the round core supplies (``bmfl.rounds.root_updater``).
"""

from __future__ import annotations

from typing import Callable

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator

RootUpdate = Callable[[torch.Tensor], torch.Tensor]
"""w^{r-1} (flat) → the edge's model after training from it on its root data."""


def trust_scores(deltas: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """(K,) ReLU of the cosine similarity of each row of ``deltas`` with ``root`` (Eq. 2);
    a zero update or a zero root update scores 0."""
    norms = deltas.norm(dim=1)
    root_norm = root.norm()
    cos = (deltas @ root) / (norms * root_norm).clamp_min(1e-30)
    cos = torch.where((norms > 0) & (root_norm > 0), cos, torch.zeros_like(cos))
    return cos.clamp_min(0.0)


@register_aggregator("fltrust")
class FLTrust(Aggregator):
    needs = frozenset({"root_update"})

    def __init__(self, root_update: RootUpdate) -> None:
        self.root_update = root_update

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        ref = reference.to(torch.float64)
        root = self.root_update(reference).to(torch.float64) - ref
        deltas = updates.to(torch.float64) - ref
        scores = trust_scores(deltas, root)
        total = float(scores.sum())
        info = {"trust": scores, "root_norm": float(root.norm())}
        if total == 0.0:
            return AggregationResult(reference.clone(), torch.zeros_like(scores), info)
        scaled = deltas * (root.norm() / deltas.norm(dim=1).clamp_min(1e-30))[:, None]
        weights = scores / total
        aggregate = ref + (weights[:, None] * scaled).sum(0)
        return AggregationResult(aggregate.to(updates.dtype), weights, info)
