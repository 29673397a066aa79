"""The white-box attacker: it queries the edge's exact pipeline, test set included, and
sends the largest push against the descent direction that the pipeline lets through.

The worst case of issue 17's "attackers who know the defence": nothing of the edge is
secret from the colluders, not even the publisher's test set, so they need no model of
any filter. As ``median_aware`` they train without DP, take the negated mean of their
clean updates as the direction u and draw their fresh noise n_a ~ N(0, v I) once; then,
for steps t along u (a geometric grid from S, the DP envelope's largest clipped signal,
down to S·2^(2−``steps``), and 0), they ask the edge what it would record from the
honest uploads and their w^{r-1} + t·u/‖u‖ + n_a (``EdgeView.edge_aggregate``), take the
step whose recorded model lies farthest along u, and refine it by ``refinements``
bisections towards the next larger step (while the pipeline keeps them, a longer push
moves the aggregate farther; once it drops them, the push counts for nothing). At an
edge that keeps standings (``bmfl.rounds.standing``) pushes rank first by how few of the
colluders the edge would then bar from its later rounds, then by how far they move the
aggregate: the attacker stays in the task, pushing as far as its standing allows each
round, rather than being shut out; a colluder serving a bar whatever they send does not
hold the others back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.attacks.envelope_aware import EnvelopePush
from bmfl.training.local import LocalTrainingConfig


@register_attack("white_box")
class WhiteBox(Attack):
    colludes = True
    knowledge = "white_box"

    def __init__(
        self, training: dict[str, Any], num_samples: int = 10_000, steps: int = 16, refinements: int = 8, z: float = 4.0,
    ) -> None:  # fmt: skip
        if steps < 2 or refinements < 0:
            raise ValueError("need steps >= 2 and refinements >= 0")
        self.training = dict(training)
        self.num_samples = num_samples
        self.steps = steps
        self.refinements = refinements
        self.z = z
        self._push = EnvelopePush(self.training, num_samples, 1.0, z)

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return replace(config, dp=False)

    def collude(self, view: EdgeView) -> torch.Tensor:
        if view.edge_aggregate is None:
            raise ValueError("white_box needs the edge's pipeline (EdgeView.edge_aggregate)")
        unit, ref, noise, _ = self._push.against_descent(view)

        def sent(step: float) -> torch.Tensor:
            return (ref + step * unit + noise).to(view.own.dtype)

        def harm(step: float) -> tuple[int, float]:
            pushed = sent(step)
            barred = 0 if view.edge_bars is None else view.edge_bars(pushed)  # fewer bars first: a stay outweighs any push
            return -barred, float((view.edge_aggregate(pushed).to(torch.float64) - ref) @ unit)

        grid = [0.0] + [self._push.step * 2.0 ** -k for k in range(self.steps - 2, -1, -1)]
        harms = [harm(t) for t in grid]
        best = max(range(len(grid)), key=harms.__getitem__)
        low, high, top = grid[best], grid[min(best + 1, len(grid) - 1)], harms[best]
        for _ in range(self.refinements if high > low else 0):
            middle = (low + high) / 2
            h = harm(middle)
            low, high, top = (middle, high, h) if h >= top else (low, middle, top)
        return sent(low)
