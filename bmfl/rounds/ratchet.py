"""The cloud's rollback guard ("ratchet", docs/algorithms.md §8.8): a round's global model
stands only if its accuracy on the publisher's test set is at most ``tolerance`` below
the best accuracy a global model of the task reached so far; otherwise the round's global
model is that best model, and the server optimiser's momentum restarts from zero.

Per-round filters bound what attackers move the model by in one round; attackers who
stay just inside every bound still drag the model down round after round (the settle
check, docs/robustness_settle.md). The guard bounds the sum: no global model scores more
than ``tolerance`` below the best one so far. It judges the global model, not an edge's
preliminary one, whose accuracy on the whole test set is low wherever the edge's
vehicles hold a few classes (an edge-level version, screened on complete non-IID data,
lowered the clean accuracy and held runs under attack far below the unguarded edges,
§8.8). It cannot stop a stall: attackers who cancel the honest vehicles' progress keep
the model where it is.

Accuracies are compared in the chain's fixed point (``bmfl.incentives.to_fixed``), and the
best is a pure function of the recorded global models and their accuracies (the chain's
``RoundFinalized`` events): the cloud rebuilds it from them each round
(:meth:`Ratchet.replay`), and the re-execution audit replays :func:`guard_cloud` round by
round with accuracies it computes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from bmfl.aggregation.server import ServerOptimizer
from bmfl.incentives import to_fixed
from bmfl.rounds.cloud import CloudOutcome


@dataclass(frozen=True)
class Best:
    """The best global model so far: its test-set accuracy (fixed point), its round r
    (the model is w^r) and the model."""

    accuracy: int
    round: int
    model: torch.Tensor


class Ratchet:
    """One task's guard: it observes each round's global model in round order
    (:func:`guard_cloud` does, after judging it), or is rebuilt from the recorded rounds
    (:meth:`replay`)."""

    def __init__(self, tolerance: float) -> None:
        if not 0 <= tolerance <= 1:
            raise ValueError("the ratchet's tolerance is an accuracy drop in [0, 1]")
        self.tolerance = to_fixed(tolerance)
        self.best: Best | None = None

    def observe(self, round_index: int, model: torch.Tensor, accuracy: float) -> None:
        """Take w^{round_index} and its test-set accuracy; a later model as accurate as the
        best replaces it (it trained longer)."""
        self._take(round_index, model, to_fixed(accuracy))

    def _take(self, round_index: int, model: torch.Tensor, fixed: int) -> None:
        if self.best is None or fixed >= self.best.accuracy:
            self.best = Best(fixed, round_index, model)

    @classmethod
    def replay(cls, tolerance: float, recorded: Iterable[tuple[int, int]], load: Callable[[int], torch.Tensor]) -> Ratchet:
        """The guard after the recorded rounds ((round, fixed-point accuracy) pairs, as
        ``RoundFinalized`` gives them): observing them in round order would keep the last
        round of the highest accuracy, so only that round's model is loaded (``load``)."""
        ratchet = cls(tolerance)
        if recorded := list(recorded):
            best = max(recorded, key=lambda pair: (pair[1], pair[0]))
            ratchet._take(best[0], load(best[0]), best[1])
        return ratchet

    def holds(self, accuracy: float) -> bool:
        """Whether a global model of this accuracy stands (always, before any was observed)."""
        return self.best is None or to_fixed(accuracy) >= self.best.accuracy - self.tolerance


def refused_in_a_row(starts: Sequence[Hashable]) -> int:
    """How many of the last rounds in a row began from a model an earlier round had
    begun from: ``starts`` names (digests) the models rounds 1 … r began from, in round
    order. A round begins from an earlier round's model when the guard refused the round
    before it (or that round carried no data and kept its model); a fresh global model
    has never begun a round. The edges read it from the chain's ``RoundStarted`` events,
    so every edge and an auditor count the same (``leave_out``'s ``escalation``)."""
    run = 0
    for r in range(len(starts) - 1, 0, -1):
        if starts[r] not in starts[:r]:
            break
        run += 1
    return run


def guard_cloud(
    outcome: CloudOutcome, accuracy: float, ratchet: Ratchet, round_index: int, server: ServerOptimizer | None = None,
) -> CloudOutcome:  # fmt: skip
    """Round ``round_index``'s global model: ``outcome``'s when it (of test-set
    ``accuracy``) stands, else the best global model so far (``rolled_back_to`` its round)
    with the server optimiser's momentum set to zero (the refused step leaves none
    behind). The ratchet then observes the model that stands."""
    best = ratchet.best
    if best is None or ratchet.holds(accuracy):
        ratchet.observe(round_index, outcome.model, accuracy)
        return outcome
    if server is not None:
        server.restart()
    ratchet._take(round_index, best.model, best.accuracy)
    return replace(outcome, model=best.model.to(outcome.model.dtype), rolled_back_to=best.round)
