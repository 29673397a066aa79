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

With ``help`` h > 0 the colluders also earn credit (leave-out testing's ``credit``, which
weighs a kept upload by the help the test set measures, docs/algorithms.md §8.11): they
send w^{r-1} + a·g + t·p + n_a, g their clean descent (−u), a from {0, S·2^(1−h), …, S/2,
S}, and p the push against the honest uploads' mean step less its part along g, and
take the pair whose recorded model lies farthest along p (the t grid for each a, then
bisections on t for the best one): help that buys weight, and a push that the help does
not undo. With h = 0 (the default) the search is the one above, along u alone.
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
        help: int = 0,
    ) -> None:  # fmt: skip
        if steps < 2 or refinements < 0 or help < 0:
            raise ValueError("need steps >= 2, refinements >= 0 and help >= 0")
        self.help = help
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
        unit, ref, noise, honest = self._push.against_descent(view)
        push, lifts = unit, [0.0]
        if self.help:  # help along the colluders' own descent to earn credit, push against the honest progress
            push = self._against_honest(honest, ref, -unit)
            lifts += [self._push.step * 2.0**-k for k in range(self.help - 1, -1, -1)]

        def sent(step: float, lift: float) -> torch.Tensor:
            start = ref if lift == 0 else ref - lift * unit  # w^{r-1} + lift·g, g = −u the colluders' descent
            return (start + step * push + noise).to(view.own.dtype)

        def harm(step: float, lift: float) -> tuple[int, float]:
            pushed = sent(step, lift)
            barred = 0 if view.edge_bars is None else view.edge_bars(pushed)  # fewer bars first: a stay outweighs any push
            return -barred, float((view.edge_aggregate(pushed).to(torch.float64) - ref) @ push)

        grid = [0.0] + [self._push.step * 2.0 ** -k for k in range(self.steps - 2, -1, -1)]
        found = []
        for lift in lifts:
            harms = [harm(t, lift) for t in grid]
            best = max(range(len(grid)), key=harms.__getitem__)
            found.append((harms[best], lift, best))
        top, lift, best = max(found, key=lambda f: f[0])
        low, high = grid[best], grid[min(best + 1, len(grid) - 1)]
        for _ in range(self.refinements if high > low else 0):
            middle = (low + high) / 2
            h = harm(middle, lift)
            low, high, top = (middle, high, h) if h >= top else (low, middle, top)
        return sent(low, lift)

    @staticmethod
    def _against_honest(honest: torch.Tensor, ref: torch.Tensor, descent: torch.Tensor) -> torch.Tensor:
        """The unit push against the honest uploads' mean step, less its part along the
        colluders' own ``descent`` (which their help undoes); against the descent itself
        where the edge has no honest upload or the two are parallel."""
        if len(honest) == 0:
            return -descent
        back = ref - honest.mean(dim=0)
        against = back - (back @ descent) * descent
        return against / against.norm() if against.norm() > 1e-9 * back.norm() else -descent
