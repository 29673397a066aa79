"""A defence-aware attacker against the signal median (``signal_median``): the longest
push against the descent direction that the filter admits, found by running the filter.

The attackers of an edge see its honest uploads (omniscient, as ALIE's), train on their
own data without DP and take the negated mean of their clean updates as the direction u
(as ``envelope_aware``). Each draws its fresh noise n_a ~ N(0, v I) once, then the edge's
attackers search for the largest step t ≤ S (the envelope's largest clipped signal) at
which ``signal_median``, given the honest uploads and their own w^{r-1} + t·u/‖u‖ + n_a,
keeps every one of theirs (bisection on t), and send ``margin``·t. They know the filter's
rule, centre and thresholds (``centre``, ``factor``, ``z``) and read each honest upload's
noise variance from its coordinates (``noise_estimate``, as the filter does for noisy
counts; their own is v for ``num_samples``); what the search cannot know exactly is the
edge's reading of the sizes, which the margin covers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.attacks.envelope_aware import EnvelopePush
from bmfl.filters.signal_median import SignalMedian, noise_estimate
from bmfl.training.local import LocalTrainingConfig


@register_attack("median_aware")
class MedianAware(Attack):
    colludes = True
    knowledge = "omniscient"

    def __init__(
        self, training: dict[str, Any], num_samples: int = 10_000, factor: float = 3.0, margin: float = 0.95,
        z: float = 4.0, bisections: int = 20, centre: str = "geometric_median",
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
        self._filter = SignalMedian(self.training, 0.0, factor, z, centre=centre)

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def collude(self, view: EdgeView) -> torch.Tensor:
        unit, ref, noise, honest = self._push.against_descent(view)

        def uploads(step: float) -> torch.Tensor:
            return ref + step * unit + noise

        # each honest upload's noise variance read from its coordinates, as the filter reads
        # a noisy count's (the sizes behind it are public on chain; this needs none of them)
        variance = torch.cat([noise_estimate(honest, ref), torch.full((len(noise),), self._push.variance, dtype=torch.float64)])

        def passes(step: float) -> bool:
            return bool(self._filter.keeps(torch.cat([honest, uploads(step)]), ref, variance)[len(honest):].all())

        low, high = 0.0, self._push.step  # the envelope's S
        if passes(high):
            low = high
        else:
            for _ in range(self.bisections):
                middle = (low + high) / 2
                low, high = (middle, high) if passes(middle) else (low, middle)
        return uploads(self.margin * low).to(view.own.dtype)
