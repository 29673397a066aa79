"""Build a run's parts from its config, by registry name, from the core: the edge and
cloud rules behind their filters (``bmfl.aggregation.compose``), the attack and the
set of attackers. Nothing here aggregates, filters or trains."""

from __future__ import annotations

from torch import nn

from bmfl.aggregation import Aggregator, compose, get_aggregator
from bmfl.attacks import Attack, get_attack
from bmfl.data import TensorData
from bmfl.filters import batched_accuracy_evaluator, get_filter
from bmfl.rounds.seeds import choose_attackers  # re-exported: drawn once per run, by the core
from bmfl.simulation.config import AttackConfig, FilterConfig


def build_rule(
    name: str, options: dict, filters: list[FilterConfig], model: nn.Module, edge_test: TensorData
) -> Aggregator:
    """``get_aggregator(name)`` behind the configured filters, in order. The
    self-reliability filter scores uploads on the publisher's test set ``edge_test``."""
    built = []
    for f in filters:
        opts = dict(f.options)
        if f.name == "self_reliability":
            if not edge_test.is_classification:
                raise ValueError("the self_reliability filter needs a classification task (it scores accuracy)")
            opts["evaluate"] = batched_accuracy_evaluator(model, edge_test)
        built.append(get_filter(f.name, **opts))
    return compose(get_aggregator(name, **options), *built)


def build_attack(config: AttackConfig) -> Attack | None:
    """The configured attack (None when no attack or no attacker)."""
    if config.name is None or config.fraction == 0:
        return None
    return get_attack(config.name, **config.options)
