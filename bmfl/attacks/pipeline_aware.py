"""A defence-aware attacker against any edge pipeline: it runs the edge's own filters and
rule on the honest uploads and its candidate uploads, and sends the candidate that moves
the edge's aggregate farthest against the descent direction.

The task's aggregation spec is public (on chain), so colluding, omniscient attackers of
an edge (they see its honest uploads, as ``median_aware``) can rebuild the pipeline the
edge runs (``aggregation``) from the task's training settings (``training``), except
the filters that need the publisher's test set, which they skip. As ``median_aware``
they train without DP, take the negated mean of their clean updates as the direction u,
draw their fresh noise n_a ~ N(0, v I) once, and for each step t of a grid over [0, S]
(S the DP envelope's largest clipped signal, ``steps`` points) compute the edge's
aggregate of the honest uploads and their w^{r-1} + t·u/‖u‖ + n_a, every upload
declaring ``num_samples``. They send the step whose aggregate lies farthest along u:
whatever the pipeline flags, clips, mixes or down-weights, they get the most harm it
lets through, up to the grid, the skipped filters and the edge's reading of the sizes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from bmfl.aggregation.base import Aggregator
from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.attacks.envelope_aware import EnvelopePush
from bmfl.training.local import LocalTrainingConfig


@register_attack("pipeline_aware")
class PipelineAware(Attack):
    colludes = True
    knowledge = "omniscient"

    def __init__(
        self, training: dict[str, Any], aggregation: dict[str, Any], num_samples: int = 10_000, steps: int = 16,
        z: float = 4.0,
    ) -> None:  # fmt: skip
        if steps < 2:
            raise ValueError("need steps >= 2")
        self.training = dict(training)
        self.aggregation = dict(aggregation)
        self.num_samples = num_samples
        self.steps = steps
        self.z = z
        self._push = EnvelopePush(self.training, num_samples, 1.0, z)
        self._rule: Aggregator | None = None

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def rule(self) -> Aggregator:
        """The edge's pipeline without the filters that need its test set."""
        if self._rule is None:
            from bmfl.rounds.edge import build_rule  # the round core builds it for the edges too
            from bmfl.filters.base import FILTERS
            from bmfl.task import AggregationSpec

            spec = AggregationSpec.model_validate(self.aggregation)
            supplies = {"training": self.training, "count_noise": 0.0}
            usable = [f for f in spec.filters if getattr(FILTERS.factory(f.name), "needs", frozenset()) <= supplies.keys()]
            self._rule = build_rule(spec.edge, usable, supplies)
        return self._rule

    def collude(self, view: EdgeView) -> torch.Tensor:
        unit, ref, noise, honest = self._push.against_descent(view)
        sizes = torch.full((len(honest) + len(noise),), float(self.num_samples))

        def harm(step: float) -> float:
            uploads = torch.cat([honest, ref + step * unit + noise])
            result = self.rule()(uploads.to(torch.float32), sizes, view.reference.to(torch.float32), round_index=view.round_index)
            return float((result.aggregate.to(torch.float64) - ref) @ unit)

        steps = torch.linspace(0.0, self._push.step, self.steps).tolist()
        best = max(steps, key=harm)
        return (ref + best * unit + noise).to(view.own.dtype)
