"""The cloud's part of a round (docs/architecture.md, "One round", step 6): the second
aggregation over the edges' preliminary models, weighted by the data behind them
(BMFL Eq. 3 with the default FedAvg rule).

Asynchronous mode (BAFDP, seed ``000``) plugs in here: a staleness-aware cloud rule
receives the preliminaries of whichever edges reported, with their staleness folded
into ``samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from bmfl.aggregation import Aggregator
from bmfl.aggregation.server import ServerOptimizer
from bmfl.rounds.edge import build_rule
from bmfl.task import AggregationSpec


def cloud_rule(spec: AggregationSpec) -> Aggregator:
    """The cloud's rule (no filters: the cloud holds no test set)."""
    return build_rule(spec.cloud, [], {})


def server_optimizer(spec: AggregationSpec, rounds: int) -> ServerOptimizer:
    """A fresh server optimiser for one task of ``rounds`` planned rounds (its state
    lives at the cloud; its schedule runs over those rounds)."""
    return ServerOptimizer(**spec.server.model_dump(), rounds=rounds)


@dataclass(frozen=True)
class CloudOutcome:
    """w^r, the rule's aggregate a^r (= w^r without a server optimiser) and each
    aggregated edge's share of it; ``rolled_back_to``: where the task's ratchet refused
    the round's model, the round r' whose w^{r'} it is instead (``bmfl.rounds.ratchet``)."""

    model: torch.Tensor
    weights: dict[int, float]
    aggregate: torch.Tensor
    rolled_back_to: int | None = None


def aggregate_cloud(
    rule: Aggregator, preliminaries: Mapping[int, torch.Tensor], samples: Mapping[int, int], reference: torch.Tensor,
    round_index: int, server: ServerOptimizer | None = None,
) -> CloudOutcome | None:  # fmt: skip
    """``rule`` over the preliminaries of the edges whose model carries data
    (``samples`` > 0), in edge order, then ``server``'s step (which updates its state);
    None when there is none (w^r = w^{r-1}, the state unchanged)."""
    edges = [e for e in sorted(preliminaries) if samples[e] > 0]
    if not edges:
        return None
    n = torch.tensor([float(samples[e]) for e in edges], dtype=torch.float64)
    result = rule(torch.stack([preliminaries[e] for e in edges]), n, reference, round_index=round_index)
    model = result.aggregate if server is None else server.step(reference, result.aggregate, round_index)
    return CloudOutcome(model, dict(zip(edges, result.weights.tolist())), result.aggregate)
