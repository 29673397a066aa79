"""A backdoor shaped to pass the DP-SGD envelope (``dp_envelope``) by construction: the
defence-aware counterpart of ``scaled_backdoor``.

``scaled_backdoor`` sends its backdoored update scaled to an honest norm, with no noise;
the envelope's shape test flags it (its coordinates are not those of Gaussian noise).
This attacker pays for the noise: each trains the pixel backdoor
(:class:`~bmfl.attacks.backdoor.PixelBackdoor`, without DP by default), the edge's
attackers take the mean of their backdoored updates as the direction u, and each sends

    w̃ = w^{r-1} + ``scale``·S·u/‖u‖ + n,   n ~ N(0, v I) drawn fresh per attacker,

with v and S as the filter computes them for ``num_samples`` from the task's public
training settings (``training``): the most a backdoor can move the model per round
while it passes every test of the envelope (norm, shape and pairs), one honest
vehicle's largest clipped step.
"""

from __future__ import annotations

from typing import Any

import torch

from bmfl.attacks.backdoor import PixelBackdoor
from bmfl.attacks.base import EdgeView, register_attack
from bmfl.attacks.envelope_aware import inside_envelope
from bmfl.task import TrainingSpec


@register_attack("envelope_backdoor")
class EnvelopeBackdoor(PixelBackdoor):
    colludes = True
    knowledge = "own"

    def __init__(
        self, training: dict[str, Any], target: int = 2, lr: float = 0.1, epochs: int = 10, poison_fraction: float = 0.5,
        dp: bool | None = False, num_samples: int = 10_000, scale: float = 0.95, z: float = 4.0,
    ) -> None:  # fmt: skip
        super().__init__(target, lr, epochs, poison_fraction, dp)
        if scale <= 0 or num_samples < 1:
            raise ValueError("need scale > 0 and num_samples >= 1")
        self.training = dict(training)
        self.num_samples = num_samples
        self.scale = scale
        self.z = z
        self._config = TrainingSpec.model_validate(self.training).local()

    def collude(self, view: EdgeView) -> torch.Tensor:
        direction = (view.own.to(torch.float64) - view.reference.to(torch.float64)).mean(dim=0)
        return inside_envelope(view, direction, self._config, self.num_samples, self.scale, self.z)
