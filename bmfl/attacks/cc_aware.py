"""A defence-aware attacker against centered clipping (``centered_clip``; Karimireddy,
He & Jaggi 2021, Eq. 2): an upload within τ of the centre is not clipped, so the most
harmful upload that centered clipping takes whole sits just inside the clipping radius
in the harmful direction.

The attackers estimate the rule's centre v_0 (the coordinate-wise median of the benign
updates Δ_i = w̃_i − w^{r-1} they know) and radius τ (``factor`` × the median of
‖Δ_i − v_0‖, the rule's own choice) and all send w^{r-1} + v_0 − (1 − margin)·τ·μ̂/‖μ̂‖,
μ̂ the mean benign update: the reversed descent direction at the largest distance that
is not clipped.
"""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack


@register_attack("cc_aware")
class CenteredClipAware(Attack):
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
        centre = deltas.median(dim=0).values if len(deltas) > 2 else deltas.mean(dim=0)
        tau = self.factor * float((deltas - centre).norm(dim=1).median())
        mean_update = deltas.mean(dim=0)
        sent = ref + centre - (1 - self.margin) * tau * mean_update / mean_update.norm().clamp_min(1e-12)
        return sent.to(view.own.dtype).expand_as(view.own).clone()
