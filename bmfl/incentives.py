"""Payouts of a finished task (BMFL Eq. 26–29; docs/algorithms.md §6) in integer wei.

This is the reference the payout contract must match to the wei, so everything is an
integer and every division is a floor division (Solidity's ``/`` on uint256).

Fixed point: accuracies ᾱ_ℓ and contributions θ are integers scaled by
:data:`SCALE` = 10**6 (``to_fixed(0.9731) == 973100``), the form in which edges record
them on chain.

Formula, with ρ_total the escrow, ρ_b the block reward, R the rounds actually run:

- block rewards: each round's leader edge gets ρ_b (so R·ρ_b in total);
- ρ_ava = ρ_total − R·ρ_b (must be ≥ 0);
- ρ_ℓ = ⌊ρ_ava · ᾱ_ℓ / Σ_i ᾱ_i⌋ over the edges i of the task (Eq. 28; nothing is
  split when Σ_i ᾱ_i = 0);
- C_{m,ℓ} = Σ_r θ_{m,ℓ}^r, the fixed-point weights of vehicle m's reliable uploads at
  edge ℓ (Eq. 26–27; malicious or unselected: 0), kept per (edge, vehicle) because
  vehicles move between edges;
- ρ_{m,ℓ} = ⌊ρ_ℓ · C_{m,ℓ} / Σ_{m'} C_{m',ℓ}⌋ (Eq. 29); an edge with Σ C = 0 pays
  nobody and its ρ_ℓ goes back to the publisher;
- vehicle m receives Σ_ℓ ρ_{m,ℓ};
- dust = ρ_total − R·ρ_b − Σ_{m,ℓ} ρ_{m,ℓ}, returned to the publisher: the floor
  remainders plus the shares of edges without contributions.

Hence Σ vehicle payouts + Σ block rewards + dust = ρ_total exactly.
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


def mean_accuracy(per_round: Sequence[int]) -> int:
    """ᾱ_ℓ = ⌊Σ_r α_ℓ^r / R_ℓ⌋ over the rounds the edge took part in (0 if none)."""
    return sum(per_round) // len(per_round) if per_round else 0


@dataclass(frozen=True)
class Payouts:
    vehicles: dict[Hashable, int]  # ρ_m, summed over edges
    per_edge: dict[Hashable, dict[Hashable, int]]  # ρ_{m,ℓ}: edge → vehicle → wei
    edge_shares: dict[Hashable, int]  # ρ_ℓ
    block_rewards: dict[Hashable, int]  # leader edge → R_ℓ·ρ_b
    dust: int  # to the publisher
    available: int  # ρ_ava

    def total(self) -> int:
        return sum(self.vehicles.values()) + sum(self.block_rewards.values()) + self.dust


def split_payouts(
    escrow: int,
    block_reward: int,
    leaders: Sequence[Hashable],
    edge_accuracy: Mapping[Hashable, int],
    contributions: Mapping[Hashable, Mapping[Hashable, int]],
) -> Payouts:
    """Split ``escrow`` wei (module docstring gives the formula).

    ``leaders``: the leader edge of each round run (R = len(leaders));
    ``edge_accuracy``: ᾱ_ℓ per edge (fixed point); ``contributions``: edge → vehicle →
    C_{m,ℓ} (fixed point). All values are non-negative integers.
    """
    values = [escrow, block_reward, *edge_accuracy.values()]
    values += [c for per in contributions.values() for c in per.values()]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        raise ValueError("escrow, rewards, accuracies and contributions must be non-negative integers")
    unknown = set(contributions) - set(edge_accuracy)
    if unknown:
        raise ValueError(f"contributions for edges without an accuracy: {sorted(map(str, unknown))}")
    available = escrow - len(leaders) * block_reward
    if available < 0:
        raise ValueError("escrow does not cover the block rewards")
    block_rewards = {edge: n * block_reward for edge, n in Counter(leaders).items()}
    acc_total = sum(edge_accuracy.values())
    edge_shares = {e: (available * a // acc_total if acc_total else 0) for e, a in edge_accuracy.items()}
    per_edge: dict[Hashable, dict[Hashable, int]] = {}
    vehicles: dict[Hashable, int] = {}
    for edge, share in edge_shares.items():
        contrib = contributions.get(edge, {})
        c_total = sum(contrib.values())
        if c_total == 0:
            continue
        per_edge[edge] = {m: share * c // c_total for m, c in contrib.items()}
        for m, amount in per_edge[edge].items():
            vehicles[m] = vehicles.get(m, 0) + amount
    dust = available - sum(vehicles.values())
    return Payouts(vehicles, per_edge, edge_shares, block_rewards, dust, available)
