"""A defence-aware attacker against the DP-SGD envelope (``dp_envelope``): the most
harmful upload that satisfies every bound of that filter by construction.

The filter admits an upload whose norm is that of fresh DP noise plus at most the
largest clipped signal S_m an honest vehicle can have, and whose inner product with
every other upload is what independent noise and bounded signals allow. So each
attacker trains on its own data *without* DP (``training_config``), takes the mean of
the attackers' clean updates as the descent direction u (built from no honest noise,
so it is not correlated with the honest uploads) and sends

    w̃ = w^{r-1} − ``scale``·S·u/‖u‖ + n,   n ~ N(0, v I) drawn fresh per attacker,

v and S as the filter computes them for the attacker's data size from the task's
training settings (``training``, public) and ``num_samples`` (the attacker's data size;
any n ≥ B·T gives the same v and S; ``scale`` < 1 keeps a margin). This is a sign-flipped honest update at the
largest signal norm the envelope admits, with honest-looking noise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.filters.dp_envelope import signal_bound
from bmfl.filters.dp_floor import noise_variance
from bmfl.task import TrainingSpec
from bmfl.training.local import LocalTrainingConfig


@register_attack("envelope_aware")
class EnvelopeAware(Attack):
    colludes = True
    knowledge = "own"

    def __init__(self, training: dict[str, Any], num_samples: int = 10_000, scale: float = 0.95, z: float = 4.0) -> None:
        if scale <= 0 or num_samples < 1:
            raise ValueError("need scale > 0 and num_samples >= 1")
        self.training = dict(training)
        self.num_samples = num_samples
        self.scale = scale
        self.z = z
        self._config = TrainingSpec.model_validate(self.training).local()

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def collude(self, view: EdgeView) -> torch.Tensor:
        direction = (view.own.to(torch.float64) - view.reference.to(torch.float64)).mean(dim=0)
        return inside_envelope(view, -direction, self._config, self.num_samples, self.scale, self.z)


def inside_envelope(
    view: EdgeView, direction: torch.Tensor, config: LocalTrainingConfig, num_samples: int, scale: float, z: float,
) -> torch.Tensor:  # fmt: skip
    """The edge's attackers' uploads w^{r-1} + ``scale``·S·u/‖u‖ + n along ``direction``
    u, with n ~ N(0, v I) drawn fresh per attacker, v and S as ``dp_envelope`` computes
    them for ``num_samples``."""
    ref = view.reference.to(torch.float64)
    unit = direction / direction.norm().clamp_min(1e-12)
    v = noise_variance(config, num_samples)
    step = scale * signal_bound(config, num_samples, z)
    noise = torch.randn(view.own.shape, generator=view.generator, dtype=torch.float64) * v**0.5
    return (ref + step * unit + noise).to(view.own.dtype)
