"""A defence-aware attacker against the signal median (``signal_median``): the longest
push against the descent direction that the filter admits, found by running the filter.

The attackers of an edge see its honest uploads (omniscient, as ALIE's), train on their
own data without DP and take the negated mean of their clean updates as the direction u
(as ``envelope_aware``). Each draws its fresh noise n_a ~ N(0, v I) once, then the edge's
attackers search for the largest step t ≤ S (the envelope's largest clipped signal) at
which ``signal_median``, given the honest uploads and their own w^{r-1} + t·u/‖u‖ + n_a,
keeps every one of theirs (bisection on t), and send ``margin``·t. Sizes are taken as
``num_samples`` for every upload. They know the filter's rule and thresholds (``factor``,
``z``); what the search cannot know is the edge's own reading of the uploads' sizes, which
the margin covers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.attacks.envelope_aware import EnvelopePush
from bmfl.filters.signal_median import SignalMedian
from bmfl.training.local import LocalTrainingConfig


@register_attack("median_aware")
class MedianAware(Attack):
    colludes = True
    knowledge = "omniscient"

    def __init__(
        self, training: dict[str, Any], num_samples: int = 10_000, factor: float = 3.0, margin: float = 0.95,
        z: float = 4.0, bisections: int = 20,
    ) -> None:  # fmt: skip
        if not 0 < margin <= 1 or bisections < 1:
            raise ValueError("need 0 < margin <= 1 and bisections >= 1")
        self.training = dict(training)
        self.num_samples = num_samples
        self.factor = factor
        self.margin = margin
        self.z = z
        self.bisections = bisections
        self._push = EnvelopePush(self.training, num_samples, 1.0, z)
        self._filter = SignalMedian(self.training, 0.0, factor, z)

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def collude(self, view: EdgeView) -> torch.Tensor:
        direction = -EnvelopePush.mean_update(view)
        unit = direction / direction.norm().clamp_min(1e-12)
        ref = view.reference.to(torch.float64)
        noise = torch.randn(view.own.shape, generator=view.generator, dtype=torch.float64) * self._push.variance**0.5
        honest = view.honest.to(torch.float64) if view.honest is not None else torch.empty(0, ref.numel(), dtype=torch.float64)

        def uploads(step: float) -> torch.Tensor:
            return ref + step * unit + noise

        def passes(step: float) -> bool:
            candidates = torch.cat([honest, uploads(step)])
            sizes = torch.full((len(candidates),), float(self.num_samples))
            return bool(self._filter(candidates, sizes, ref).keep[len(honest):].all())

        low, high = 0.0, self._push.step  # the envelope's S
        if passes(high):
            low = high
        else:
            for _ in range(self.bisections):
                middle = (low + high) / 2
                low, high = (middle, high) if passes(middle) else (low, middle)
        return uploads(self.margin * low).to(view.own.dtype)
