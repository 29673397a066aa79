"""Random pick (FBFL §IV-B, Fig. 5): the baseline that "randomly selects the local model
as the global model". One upload, chosen uniformly with the rule's own seeded generator,
becomes the aggregate (weight 1, every other upload 0); successive calls draw anew."""

from __future__ import annotations

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator


@register_aggregator("random_pick")
class RandomPick(Aggregator):
    """``seed`` seeds the draws, so a run is reproducible."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k = updates.shape[0]
        pick = int(torch.randint(k, (1,), generator=self._generator))
        weights = torch.zeros(k, dtype=torch.float64)
        weights[pick] = 1.0
        return AggregationResult(updates[pick].clone(), weights, {"selected": [pick]})
