"""A defence-aware attacker against adaptive norm bounding (``norm_clip``, FLAME's
clipping; Sun et al. 2019) and the accuracy test (``accuracy_test``).

Norm bounding with the median honest norm B leaves any update of norm ≤ B untouched,
so the most harmful upload that survives it whole is the reversed benign mean update
at that norm: w = w^{r-1} − s·μ̂/‖μ̂‖ with s = ``factor``·(1 − margin)·B, B the median
norm of the benign updates the attackers know (omniscient: the honest uploads of the
edge). The accuracy test bounds how much test accuracy such a step may cost; an
attacker who knows that its full-norm step is flagged lowers ``factor`` (it has no test
set, so it cannot search the threshold as ``reliability_aware`` does for Eq. 11).
"""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack


@register_attack("clip_aware")
class ClipAware(Attack):
    colludes = True

    def __init__(self, factor: float = 1.0, margin: float = 0.01, omniscient: bool = True) -> None:
        if factor <= 0 or not 0 <= margin < 1:
            raise ValueError("need factor > 0 and margin in [0, 1)")
        self.factor = factor
        self.margin = margin
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def collude(self, view: EdgeView) -> torch.Tensor:
        ref = view.reference.to(torch.float64)
        deltas = view.known().to(torch.float64) - ref
        mean_update = deltas.mean(dim=0)
        bound = float(deltas.norm(dim=1).median())
        step = self.factor * (1 - self.margin) * bound
        sent = ref - step * mean_update / mean_update.norm().clamp_min(1e-12)
        return sent.to(view.own.dtype).expand_as(view.own).clone()
