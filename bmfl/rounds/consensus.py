"""Proof of testing accuracy (docs/architecture.md, "One round", step 5; BMFL §IV-D):
every evaluator edge scores every recorded edge's preliminary model on the publisher's
test set; an edge's score is the upper median of the scores the *other* edges gave it,
and the leader is the edge with the highest median (ties to the smallest index), as the
contract's ``finalizeRound`` elects it. With fewer than three scorers there is no
consensus: no leader and no score counts (a single liar would decide it).

The score is the test accuracy for classification and 1 / (1 + MSE) for regression
(``bmfl.consensus.consensus_score``), in fixed point (``bmfl.incentives.SCALE``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from bmfl.consensus import consensus_accuracies, edge_medians, elect_leader, score_evaluator
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


def medians_and_leader(rows: Mapping[int, Mapping[int, int]]) -> tuple[dict[int, int], int] | None:
    """Evaluator → (edge → score) rows of the recorded edges → (edge → upper median over the
    other evaluators, the leader), by the contract's own rules (``bmfl.consensus.edge_medians``
    and ``elect_leader``); ``None`` without a quorum. Every row must score the same edges."""
    recorded = sorted(next(iter(rows.values())))
    if any(sorted(row) != recorded for row in rows.values()):
        raise ValueError("every evaluator must score the same edges")
    columns = {evaluator: [row.get(e, 0) for e in range(recorded[-1] + 1)] for evaluator, row in rows.items()}
    medians = edge_medians(columns, set(recorded))
    if medians is None:
        return None
    return {e: medians[e] for e in recorded}, elect_leader(medians, set(recorded))
