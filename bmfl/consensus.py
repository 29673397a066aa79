"""Proof of testing accuracy (BMFL §IV-D; ALGORITHMS.md §5).

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
from typing import Callable, Hashable, Mapping

import torch
from torch import nn

from bmfl.data.base import TensorData
from bmfl.incentives import to_fixed
from bmfl.params import load_vector
from bmfl.training.evaluate import Evaluation, evaluate


def select_leader(accuracies: Mapping[Hashable, int]) -> Hashable:
    """The edge with the highest fixed-point accuracy; ties to the smallest id."""
    if not accuracies:
        raise ValueError("no edge scored this round")
    best = max(accuracies.values())
    return min(edge for edge, acc in accuracies.items() if acc == best)


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

    def score(vectors: torch.Tensor) -> torch.Tensor:
        out = [consensus_score(evaluate(load_vector(work, v), data, batch_size)) for v in vectors]
        return torch.tensor(out, dtype=torch.float64)

    return score
