"""Constrain-and-scale backdoor (Bagdasaryan et al., AISTATS 2020, §4.2 model
replacement with the norm constraint of §4.3; Sun et al. 2019 "Can you really backdoor
FL?" for the norm-bounding defence it evades).

Each attacker trains the pixel-pattern backdoor (:class:`~bmfl.attacks.backdoor.
PixelBackdoor`), then boosts its update Δ = w̃ − w^{r-1} by γ (default: n/A, the edge's
uploads over its attackers, so the attackers' share survives averaging: model
replacement) and shrinks it to the norm bound it must look honest under:
‖Δ_sent‖ = min(γ‖Δ‖, (1 − margin)·B), with B = ``norm_bound`` when given, else the
median norm of the benign updates the attackers know (omniscient: the honest uploads of
the edge, whose DP noise sets their norm).
"""

from __future__ import annotations

import torch

from bmfl.attacks.backdoor import PixelBackdoor
from bmfl.attacks.base import EdgeView, register_attack


@register_attack("scaled_backdoor")
class ScaledBackdoor(PixelBackdoor):
    colludes = True
    knowledge = "omniscient"

    def __init__(
        self,
        target: int = 2,
        lr: float = 0.1,
        epochs: int = 10,
        poison_fraction: float = 0.5,
        dp: bool | None = None,
        boost: float | None = None,
        norm_bound: float | None = None,
        margin: float = 0.01,
    ) -> None:
        super().__init__(target, lr, epochs, poison_fraction, dp)
        if boost is not None and boost <= 0:
            raise ValueError("boost must be positive")
        self.boost = boost
        self.norm_bound = norm_bound
        self.margin = margin

    def collude(self, view: EdgeView) -> torch.Tensor:
        ref = view.reference.to(torch.float64)
        delta = view.own.to(torch.float64) - ref
        gamma = view.total / len(view.vehicles) if self.boost is None else self.boost
        if self.norm_bound is not None:
            bound = self.norm_bound
        else:
            bound = float((view.known().to(torch.float64) - ref).norm(dim=1).median())
        norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scale = torch.minimum(torch.full_like(norms, gamma), (1 - self.margin) * bound / norms)
        return (ref + scale * delta).to(view.own.dtype)
