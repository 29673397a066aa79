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
from bmfl.attacks.envelope_aware import EnvelopePush


@register_attack("envelope_backdoor")
class EnvelopeBackdoor(PixelBackdoor):
    colludes = True
    knowledge = "own"

    def __init__(
        self, training: dict[str, Any], target: int = 2, lr: float = 0.1, epochs: int = 10, poison_fraction: float = 0.5,
        dp: bool | None = False, num_samples: int = 10_000, scale: float = 0.95, z: float = 4.0,
    ) -> None:  # fmt: skip
        super().__init__(target, lr, epochs, poison_fraction, dp)
        self.training = dict(training)
        self.num_samples = num_samples
        self.scale = scale
        self.z = z
        self._push = EnvelopePush(self.training, num_samples, scale, z)

    def collude(self, view: EdgeView) -> torch.Tensor:
        return self._push.send(view, self._push.mean_update(view))
