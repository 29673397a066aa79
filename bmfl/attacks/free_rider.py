"""The disguised free rider (Fraboni et al. 2021): a vehicle that trains nothing and sends
w^{r-1} plus fresh Gaussian noise at the variance an honest DP-SGD upload carries,

    w̃ = w^{r-1} + n,   n ~ N(0, v I),

v as ``dp_envelope`` computes it from the task's public training settings (``training``)
for ``num_samples`` samples (``HonestNoise``, as the envelope attackers draw theirs). Under DP an honest upload's
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
from bmfl.attacks.envelope_aware import HonestNoise


@register_attack("free_rider")
class FreeRider(Attack):
    trains = False

    def __init__(self, training: dict[str, Any], num_samples: int = 10_000) -> None:
        self.training = dict(training)
        self.num_samples = num_samples
        self._noise = HonestNoise(self.training, num_samples)

    @property
    def variance(self) -> float:
        """v, the per-coordinate variance of the noise it sends."""
        return self._noise.variance

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        noise = self._noise.draw(upload.shape, context.generator)
        return (context.reference.to(torch.float64) + noise).to(upload.dtype)
