"""Same value (BMFL §V): every parameter of the upload is set to c = 100."""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, AttackContext, register_attack


@register_attack("same_value")
class SameValue(Attack):
    trains = False

    def __init__(self, value: float = 100.0) -> None:
        self.value = value

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return torch.full_like(upload, self.value)
