"""Inner-product manipulation (IPM; Xie, Koyejo & Gupta, UAI 2020, "Fall of empires",
§4): every attacker sends the negative of the mean benign update scaled by ε,
w = w^{r-1} − ε·mean_m(w̃_m − w^{r-1}), so the inner product between the true mean
update and the aggregate's becomes negative. Small ε (0.1 in the paper) hides from
distance-based rules; large ε (100) overwhelms the mean.
"""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack


@register_attack("ipm")
class InnerProductManipulation(Attack):
    colludes = True

    def __init__(self, epsilon: float = 0.1, omniscient: bool = True) -> None:
        if epsilon <= 0:
            raise ValueError("epsilon must be positive")
        self.epsilon = epsilon
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def collude(self, view: EdgeView) -> torch.Tensor:
        mean_update = (view.known() - view.reference).mean(dim=0)
        return (view.reference - self.epsilon * mean_update).expand_as(view.own).clone()
