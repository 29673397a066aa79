"""Payouts of a finished task (BMFL Eq. 26–29; docs/algorithms.md §6) in integer wei,
as ``BMFLTasks.settle`` computes them: the exact rational value floored once per payee.

Fixed point: consensus scores and contributions θ are integers scaled by
:data:`SCALE` = 10**6 (``to_fixed(0.9731) == 973100``), the form in which edges record
them on chain.

Formula, with ρ_total the escrow and ρ_b the block reward:

- block rewards: the leader of each round with a consensus gets ρ_b;
- ρ_ava = ρ_total − ρ_b · (rounds with a leader) (must be ≥ 0);
- S_ℓ = Σ_r ᾱ_ℓ^r, edge ℓ's consensus scores summed over the rounds with a consensus
  (a round it did not record adds 0). The paper's ᾱ_ℓ is the mean over the task's K
  rounds, S_ℓ / K; K cancels in ᾱ_ℓ / Σ_i ᾱ_i (Eq. 28), so no division happens before
  the last one and nothing is floored in between;
- C_{m,ℓ} = Σ_r θ_{m,ℓ}^r, the fixed-point weights of vehicle m's reliable uploads at
  edge ℓ (Eq. 26–27; flagged: 0), kept per (edge, vehicle) because vehicles move;
  C_ℓ = Σ_m C_{m,ℓ};
- ρ_{m,ℓ} = ⌊ρ_ava · S_ℓ · C_{m,ℓ} / (Σ_i S_i · C_ℓ)⌋ (Eq. 28–29 in one division); an edge
  with C_ℓ = 0 pays nobody;
- dust = ρ_ava − Σ_{m,ℓ} ρ_{m,ℓ}, returned to the publisher: floor remainders plus the
  shares of edges without contributions.

Hence Σ payouts + Σ block rewards + dust = ρ_total exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

SCALE = 10**6
"""Fixed-point scale of accuracies and contributions (6 decimals)."""


def to_fixed(value: float) -> int:
    """``round(value · SCALE)`` (Python rounding, half to even); done off chain."""
    return int(round(value * SCALE))


@dataclass(frozen=True)
class Payouts:
    vehicles: dict[Hashable, int]  # ρ_m, summed over edges
    per_edge: dict[Hashable, dict[Hashable, int]]  # ρ_{m,ℓ}: edge → vehicle → wei
    edge_shares: dict[Hashable, int]  # ⌊ρ_ℓ⌋, for display (payouts divide once, not through it)
    block_rewards: dict[Hashable, int]  # leader edge → R_ℓ·ρ_b
    dust: int  # to the publisher
    available: int  # ρ_ava

    def total(self) -> int:
        return sum(self.vehicles.values()) + sum(self.block_rewards.values()) + self.dust


def split_payouts(
    escrow: int,
    block_reward: int,
    leaders: Sequence[Hashable],
    edge_scores: Mapping[Hashable, int],
    contributions: Mapping[Hashable, Mapping[Hashable, int]],
) -> Payouts:
    """Split ``escrow`` wei (module docstring gives the formula).

    ``leaders``: the leader edge of each round with a consensus; ``edge_scores``: S_ℓ per
    edge (fixed point); ``contributions``: edge → vehicle → C_{m,ℓ} (fixed point). All
    values are non-negative integers.
    """
    values = [escrow, block_reward, *edge_scores.values()]
    values += [c for per in contributions.values() for c in per.values()]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        raise ValueError("escrow, rewards, scores and contributions must be non-negative integers")
    unknown = set(contributions) - set(edge_scores)
    if unknown:
        raise ValueError(f"contributions for edges without a score: {sorted(map(str, unknown))}")
    available = escrow - len(leaders) * block_reward
    if available < 0:
        raise ValueError("escrow does not cover the block rewards")
    block_rewards = {edge: n * block_reward for edge, n in Counter(leaders).items()}
    score_total = sum(edge_scores.values())
    edge_shares = {e: (available * s // score_total if score_total else 0) for e, s in edge_scores.items()}
    per_edge: dict[Hashable, dict[Hashable, int]] = {}
    vehicles: dict[Hashable, int] = {}
    for edge, score in edge_scores.items():
        contrib = contributions.get(edge, {})
        c_total = sum(contrib.values())
        if c_total == 0 or score_total == 0:
            continue
        per_edge[edge] = {m: available * score * c // (score_total * c_total) for m, c in contrib.items()}
        for m, amount in per_edge[edge].items():
            vehicles[m] = vehicles.get(m, 0) + amount
    dust = available - sum(vehicles.values())
    return Payouts(vehicles, per_edge, edge_shares, block_rewards, dust, available)
