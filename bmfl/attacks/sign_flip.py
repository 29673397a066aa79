"""Sign flipping (BMFL §V): the update Δ = w̃ − w^{r-1} is sent as w^{r-1} + γΔ, γ = −10."""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, AttackContext, register_attack


@register_attack("sign_flip")
class SignFlip(Attack):
    def __init__(self, gamma: float = -10.0) -> None:
        self.gamma = gamma

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return context.reference + self.gamma * (upload - context.reference)
