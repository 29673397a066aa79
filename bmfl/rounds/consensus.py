"""Proof of testing accuracy (docs/architecture.md, "One round", step 5; BMFL §IV-D):
every evaluator edge scores every recorded edge's preliminary model on the publisher's
test set; an edge's score is the lower median of the scores it received, and the
leader is the edge with the highest median (ties to the smallest index), as the
contract's ``finalizeRound`` elects it.

The score is the test accuracy for classification and 1 / (1 + MSE) for regression
(``bmfl.consensus.consensus_score``), in fixed point (``bmfl.incentives.SCALE``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from bmfl.consensus import consensus_accuracies, score_evaluator
from bmfl.data.base import TensorData
from bmfl.filters import Evaluator, batched_accuracy_evaluator


def task_scorer(model: nn.Module, test_set: TensorData) -> Evaluator:
    """The task's one scorer (stacked flat vectors → scores in [0, 1]): the accuracy for
    classification, which the self-reliability filter also uses as α, else 1 / (1 + MSE)."""
    if test_set.is_classification:
        return batched_accuracy_evaluator(model, test_set)
    return score_evaluator(model, test_set)


def cross_scores(preliminaries: Mapping[int, torch.Tensor], scorer: Evaluator) -> dict[int, int]:
    """One evaluator's fixed-point scores of the recorded edges' models (edge → score)."""
    return dict(sorted(consensus_accuracies(preliminaries, scorer).items()))


def lower_median(values: list[int]) -> int:
    """The lower median: element ⌊(n − 1)/2⌋ of the sorted values."""
    if not values:
        raise ValueError("no score to take the median of")
    return sorted(values)[(len(values) - 1) // 2]


def medians_and_leader(rows: Mapping[int, Mapping[int, int]]) -> tuple[dict[int, int], int]:
    """Evaluator → (edge → score) rows → (edge → lower median over the evaluators, the
    leader). Every row must score the same edges."""
    edges = sorted(next(iter(rows.values())))
    if any(sorted(row) != edges for row in rows.values()):
        raise ValueError("every evaluator must score the same edges")
    medians = {e: lower_median([row[e] for row in rows.values()]) for e in edges}
    best = max(medians.values())
    return medians, min(e for e, m in medians.items() if m == best)
