"""A defence-aware attacker against the self-reliability filter (BMFL Eq. 11–13 as
shipped in ``bmfl.filters.self_reliability``, reference-relative threshold).

The filter keeps upload w when Λ = (1 + χ/r)·α_w − D_w ≥ T = (1 + χ/r)·α_ref − tol,
i.e. when D_w ≤ tol − (1 + χ/r)·(α_ref − α_w), and dir_w = +1 (Eq. 13). The attacker
knows χ, the tolerance and the normalisation, not the test set: it assumes its model
loses at most ``accuracy_drop`` of test accuracy against w^{r-1} and sends the most
harmful update that stays inside the remaining distance budget

    D_max = (1 − margin)·tol − (1 + χ/r)·accuracy_drop,

in the direction opposite to the benign mean update it knows (IPM's direction):
w = w^{r-1} − s·μ̂/‖μ̂‖ with D_w = D_max, i.e. s = √(D_max·‖w^{r-1}‖²) (``normalize=
"reference"``) or √D_max (``"none"``); s is halved until dir_w = +1. With no budget
left (D_max ≤ 0) it sends the benign mean and stays hidden.
"""

from __future__ import annotations

import math

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.filters.self_reliability import NORMALIZATIONS, directions


def distance_budget(tolerance: float, chi: float, round_index: int, accuracy_drop: float, margin: float) -> float:
    """D_max: the largest D an upload losing ``accuracy_drop`` accuracy may have."""
    return (1 - margin) * tolerance - (1 + chi / round_index) * accuracy_drop


@register_attack("reliability_aware")
class ReliabilityAware(Attack):
    colludes = True

    def __init__(
        self,
        tolerance: float = 25.0,
        chi: float = 0.5,
        normalize: str = "reference",
        accuracy_drop: float = 0.1,
        margin: float = 0.01,
        omniscient: bool = True,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}")
        if not 0 <= margin < 1 or accuracy_drop < 0:
            raise ValueError("need margin in [0, 1) and accuracy_drop >= 0")
        self.tolerance = tolerance
        self.chi = chi
        self.normalize = normalize
        self.accuracy_drop = accuracy_drop
        self.margin = margin
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def collude(self, view: EdgeView) -> torch.Tensor:
        ref = view.reference.to(torch.float64)
        mean_update = (view.known().to(torch.float64) - ref).mean(dim=0)
        budget = distance_budget(self.tolerance, self.chi, view.round_index, self.accuracy_drop, self.margin)
        norm = float(mean_update.norm())
        if budget <= 0 or norm == 0:
            sent = ref + mean_update
        else:
            scale2 = float(ref.pow(2).sum()) if self.normalize == "reference" else 1.0
            step = math.sqrt(budget * scale2)
            sent = ref - step * mean_update / norm
            while int(directions(sent[None], ref)[0]) < 0 and step > 1e-12:
                step /= 2
                sent = ref - step * mean_update / norm
        return sent.to(view.own.dtype).expand_as(view.own).clone()
