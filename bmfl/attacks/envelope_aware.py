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
        self.training = dict(training)
        self.num_samples = num_samples
        self.scale = scale
        self.z = z
        self._push = EnvelopePush(self.training, num_samples, scale, z)

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def collude(self, view: EdgeView) -> torch.Tensor:
        return self._push.send(view, -self._push.mean_update(view))


class HonestNoise:
    """The DP noise an honest upload of the task carries, N(0, v I), v as ``dp_envelope``
    computes it for ``num_samples`` from the task's public training settings (any
    n ≥ B·T gives the same v)."""

    def __init__(self, training: dict[str, Any], num_samples: int) -> None:
        if num_samples < 1:
            raise ValueError("need num_samples >= 1")
        self.config = TrainingSpec.model_validate(training).local()
        self.variance = noise_variance(self.config, num_samples)

    def draw(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """Fresh noise of that variance, in float64."""
        return torch.randn(shape, generator=generator, dtype=torch.float64) * self.variance**0.5


class EnvelopePush(HonestNoise):
    """What an attacker inside the envelope sends: w^{r-1} + ``scale``·S·u/‖u‖ + n along
    a direction u, with n ~ N(0, v I) drawn fresh per attacker, v and S as ``dp_envelope``
    computes them for ``num_samples`` from the task's public training settings."""

    def __init__(self, training: dict[str, Any], num_samples: int, scale: float, z: float) -> None:
        if scale <= 0:
            raise ValueError("need scale > 0")
        super().__init__(training, num_samples)
        self.step = scale * signal_bound(self.config, num_samples, z)

    @staticmethod
    def mean_update(view: EdgeView) -> torch.Tensor:
        """The mean of the edge's attackers' own trained updates (no honest noise in it)."""
        return (view.own.to(torch.float64) - view.reference.to(torch.float64)).mean(dim=0)

    def against_descent(self, view: EdgeView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What an omniscient search starts from, in float64: the unit direction u against
        the attackers' clean descent, w^{r-1}, one fresh noise draw per attacker and the
        honest uploads of the edge (none when the attack does not see them)."""
        direction = -self.mean_update(view)
        ref = view.reference.to(torch.float64)
        noise = self.draw(view.own.shape, view.generator)
        honest = view.honest.to(torch.float64) if view.honest is not None else torch.empty(0, ref.numel(), dtype=torch.float64)
        return direction / direction.norm().clamp_min(1e-12), ref, noise, honest

    def send(self, view: EdgeView, direction: torch.Tensor) -> torch.Tensor:
        """The attackers' uploads, one fresh noise draw each."""
        unit = direction / direction.norm().clamp_min(1e-12)
        noise = self.draw(view.own.shape, view.generator)
        return (view.reference.to(torch.float64) + self.step * unit + noise).to(view.own.dtype)
