"""Proof of testing accuracy (BMFL §IV-D; ALGORITHMS.md §5).

Each edge's preliminary model w_ℓ is scored on the publisher's test set; its consensus
accuracy ᾱ_ℓ (fixed point, ``bmfl.incentives.SCALE``) is recorded on chain. The leader
of the round is argmax_ℓ ᾱ_ℓ; ties go to the smallest edge id (for on-chain addresses,
the numerically smallest address when ids are lowercase hex strings of equal length),
so the choice does not depend on the order in which scores arrived. The leader
records the round and earns the block reward ρ_b.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping

import torch

from bmfl.incentives import to_fixed


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
