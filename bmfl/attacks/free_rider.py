"""The disguised free rider (Fraboni et al. 2021): a vehicle that trains nothing and sends
w^{r-1} plus fresh Gaussian noise at the variance an honest DP-SGD upload carries,

    w̃ = w^{r-1} + n,   n ~ N(0, v I),

v as ``dp_envelope`` computes it from the task's public training settings (``training``)
for ``num_samples`` samples (any n ≥ B·T gives the same v). Under DP an honest upload's
signal is small beside its noise, so this upload looks like an honest one whose signal
the noise hides. It costs the attacker no computation and harms the model only by the
weight it takes from honest uploads; where pay follows the weight θ (docs/algorithms.md
§6), it is paid as an honest vehicle for contributing nothing. It needs no collusion and
no knowledge beyond the task's settings.
"""

from __future__ import annotations

from typing import Any

import torch

from bmfl.attacks.base import Attack, AttackContext, register_attack
from bmfl.filters.dp_floor import noise_variance
from bmfl.task import TrainingSpec


@register_attack("free_rider")
class FreeRider(Attack):
    trains = False

    def __init__(self, training: dict[str, Any], num_samples: int = 10_000) -> None:
        if num_samples < 1:
            raise ValueError("need num_samples >= 1")
        self.training = dict(training)
        self.variance = noise_variance(TrainingSpec.model_validate(self.training).local(), num_samples)

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        noise = torch.randn(upload.shape, generator=context.generator, dtype=torch.float64) * self.variance**0.5
        return (context.reference.to(torch.float64) + noise).to(upload.dtype)
