"""Build a run's attack from its config, by registry name, from the core. The rules come
from the round core (``bmfl.rounds.edge_rule`` / ``cloud_rule``); nothing here
aggregates, filters or trains."""

from __future__ import annotations

from bmfl.attacks import Attack, get_attack
from bmfl.rounds import choose_attackers
from bmfl.simulation.config import AttackConfig

__all__ = ["build_attack", "choose_attackers"]


def build_attack(config: AttackConfig) -> Attack | None:
    """The configured attack (None when no attack or no attacker)."""
    if config.name is None or config.fraction == 0:
        return None
    return get_attack(config.name, **config.options)
