"""Proof of testing accuracy (BMFL §IV-D; docs/algorithms.md §5).

Each edge's preliminary model w_ℓ is scored on the publisher's test set; its consensus
accuracy ᾱ_ℓ (fixed point, ``bmfl.incentives.SCALE``) is recorded on chain. The leader
of the round is argmax_ℓ ᾱ_ℓ; ties go to the smallest edge id (for on-chain addresses,
the numerically smallest address when ids are lowercase hex strings of equal length),
so the choice does not depend on the order in which scores arrived. The leader
records the round and earns the block reward ρ_b.

The score is the test accuracy for classification tasks. BMFL only defines it for
classification; for regression (traffic forecasting) :func:`consensus_score` uses
1 / (1 + MSE), which lies in (0, 1] like an accuracy and ranks edges as −MSE does.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Collection, Hashable, Mapping, Sequence

import torch
from torch import nn

from bmfl.data.base import TensorData
from bmfl.incentives import to_fixed
from bmfl.models.features import featurized
from bmfl.params import load_vector
from bmfl.training.evaluate import Evaluation, evaluate


def select_leader(accuracies: Mapping[Hashable, int]) -> Hashable:
    """The edge with the highest fixed-point accuracy; ties to the smallest id."""
    if not accuracies:
        raise ValueError("no edge scored this round")
    best = max(accuracies.values())
    return min(edge for edge, acc in accuracies.items() if acc == best)


MIN_QUORUM = 3
"""``BMFLTasks.MIN_QUORUM``: fewest scoring edges for a consensus round."""


def upper_median(values: Sequence[int]) -> int:
    """The upper median, ``sorted(values)[n // 2]``: with n values of which f < n/2 come
    from liars it lies between two honest values (f + 1 ≤ n // 2 + 1 ≤ n − f)."""
    if not values:
        raise ValueError("no score to take the median of")
    return sorted(values)[len(values) // 2]


def edge_medians(scores: Mapping[int, Sequence[int]], recorded: Collection[int]) -> list[int] | None:
    """``BMFLTasks._medians``: ``scores`` maps each evaluator edge that scored the round to
    its score of every edge index 0 … max(``recorded``); entry ℓ of the result is the upper
    median of column ℓ over the *other* evaluators (an edge's score of itself never
    counts) for a recorded edge ℓ, 0 for an index that did not record. ``None`` when fewer
    than :data:`MIN_QUORUM` edges scored (no consensus). Only recorded edges may score."""
    if not recorded or min(recorded) < 0:
        raise ValueError("recorded must name edge indices >= 0")
    n = max(recorded) + 1
    for evaluator, row in scores.items():
        if evaluator not in recorded:
            raise ValueError(f"edge {evaluator} scored without recording")
        if len(row) != n:
            raise ValueError(f"edge {evaluator} gave {len(row)} scores, not {n}")
    if len(scores) < MIN_QUORUM:
        return None
    return [
        upper_median([row[e] for ev, row in scores.items() if ev != e]) if e in recorded else 0 for e in range(n)
    ]


def elect_leader(medians: Sequence[int], recorded: Collection[int]) -> int:
    """The leader in ``BMFLTasks.finalizeRound``: the recorded edge with the highest median
    (the first strictly greater one while scanning indices up, so ties go to the smallest
    index); edges that did not record are not eligible whatever their entry."""
    leader: int | None = None
    for e, median in enumerate(medians):
        if e in recorded and (leader is None or median > medians[leader]):
            leader = e
    if leader is None:
        raise ValueError("no recorded edge to lead the round")
    return leader


def consensus_accuracies(
    edge_models: Mapping[Hashable, torch.Tensor], evaluate: Callable[[torch.Tensor], torch.Tensor]
) -> dict[Hashable, int]:
    """Score every edge's flat preliminary model with ``evaluate`` (stacked vectors →
    accuracies in [0, 1], as ``bmfl.filters.accuracy_evaluator``), in fixed point."""
    edges = list(edge_models)
    if not edges:
        return {}
    acc = evaluate(torch.stack([edge_models[e] for e in edges]))
    return {e: to_fixed(float(a)) for e, a in zip(edges, acc)}


def consensus_score(evaluation: Evaluation) -> float:
    """Accuracy, or 1 / (1 + MSE) for a regression evaluation (module docstring); a
    diverged regression model (non-finite MSE) scores 0."""
    if evaluation.accuracy is not None:
        return evaluation.accuracy
    return 1.0 / (1.0 + evaluation.loss) if math.isfinite(evaluation.loss) else 0.0


def score_evaluator(model: nn.Module, data: TensorData, batch_size: int = 2048) -> Callable[[torch.Tensor], torch.Tensor]:
    """Stacked flat vectors → :func:`consensus_score` on ``data`` (``model`` gives the
    architecture; a private copy is used), for :func:`consensus_accuracies`."""
    work = copy.deepcopy(model)
    data = featurized(work, data)  # once, not once per candidate

    def score(vectors: torch.Tensor) -> torch.Tensor:
        out = [consensus_score(evaluate(load_vector(work, v), data, batch_size)) for v in vectors]
        return torch.tensor(out, dtype=torch.float64)

    return score
