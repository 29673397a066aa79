"""``split_payouts`` against an independent exact-fraction reference of the formula in
``bmfl/incentives.py``'s docstring (BMFL Eq. 26–29) as ``BMFLTasks.settle`` applies it:
each payee's amount is one floor of the exact rational ρ_ava · S_ℓ · C_{m,ℓ} / (Σ S · C_ℓ),
and every field is compared, not only the total (whose dust is the remainder by construction)."""

from collections import Counter
from fractions import Fraction
from math import floor

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bmfl.incentives import SCALE, split_payouts


def reference(escrow, block_reward, leaders, edge_scores, contributions):
    """The docstring's formula, written independently with exact fractions."""
    available = escrow - block_reward * len(leaders)
    rewards = {e: block_reward * n for e, n in Counter(leaders).items()}
    total = sum(edge_scores.values())
    share = {e: Fraction(available) * Fraction(s, total) if total else Fraction(0) for e, s in edge_scores.items()}
    per_edge = {}
    for e, per in contributions.items():
        c_total = sum(per.values())
        if c_total and total:
            per_edge[e] = {m: floor(share[e] * Fraction(c, c_total)) for m, c in per.items()}
    vehicles = {}
    for per in per_edge.values():
        for m, amount in per.items():
            vehicles[m] = vehicles.get(m, 0) + amount
    paid = sum(vehicles.values())
    unpaid_edges = sum(s for e, s in share.items() if e not in per_edge)  # exact shares nobody can take
    floor_remainders = sum(share[e] - sum(per.values()) for e, per in per_edge.items())
    dust = unpaid_edges + floor_remainders  # built from its parts, not as a difference
    assert dust.denominator == 1 and (dust == available - paid or total == 0)
    if total == 0:
        dust = Fraction(available)
    return {"available": available, "block_rewards": rewards, "edge_shares": {e: floor(s) for e, s in share.items()},
            "per_edge": per_edge, "vehicles": vehicles, "dust": int(dust)}  # fmt: skip


EDGES = ["e0", "e1", "e2", "e3"]
VEHICLES = [f"v{i}" for i in range(8)]


@st.composite
def cases(draw):
    acc = draw(st.dictionaries(st.sampled_from(EDGES), st.integers(0, SCALE) | st.sampled_from([0, 1, SCALE]), min_size=1))
    ids = sorted(acc)
    rounds = draw(st.integers(0, 12))
    leaders = draw(st.lists(st.sampled_from(ids), min_size=rounds, max_size=rounds))
    escrow = draw(st.integers(0, 10**30) | st.integers(0, 1000))
    block_reward = draw(st.integers(0, escrow // rounds if rounds else 10**24))
    contributions = {
        e: draw(st.dictionaries(st.sampled_from(VEHICLES), st.integers(0, 50 * SCALE) | st.integers(0, 3), max_size=6))
        for e in draw(st.lists(st.sampled_from(ids), unique=True))
    }
    return escrow, block_reward, leaders, acc, contributions


@settings(max_examples=150, deadline=None)
@given(cases())
@example((1000, 10, ["A", "A", "B"], {"A": 600_000, "B": 300_000, "C": 100_000},
          {"A": {"v1": 2, "v2": 1}, "B": {"v1": 1, "v3": 1, "v4": 1}, "C": {"v5": 0}}))  # fmt: skip
@example((10, 0, [], {"A": 1, "B": 1, "C": 1}, {"A": {"x": 1, "y": 1, "z": 1}, "B": {"x": 1}, "C": {"y": 1}}))
@example((7, 0, [], {"A": 1, "B": 2}, {"A": {"x": 1}, "B": {"x": 2, "y": 1}}))  # x 2 + 3, y 1; dust 1
def test_every_field_matches_the_exact_fraction_reference(case):
    escrow, block_reward, leaders, acc, contributions = case
    got = split_payouts(escrow, block_reward, leaders, acc, contributions)
    want = reference(escrow, block_reward, leaders, acc, contributions)
    assert got.available == want["available"]
    assert got.block_rewards == want["block_rewards"]
    assert got.edge_shares == want["edge_shares"]
    assert got.per_edge == want["per_edge"]
    assert got.vehicles == want["vehicles"]
    assert got.dust == want["dust"]
    assert got.total() == escrow
    assert all(v >= 0 for v in [got.dust, *got.vehicles.values(), *got.edge_shares.values()])


def test_reference_by_hand():
    # ρ_ava = 7, S = (1, 2): A: x ⌊7·1·1/(3·1)⌋ = 2; B: x ⌊7·2·2/(3·3)⌋ = 3, y ⌊7·2·1/9⌋ = 1 → dust 1
    p = split_payouts(7, 0, [], {"A": 1, "B": 2}, {"A": {"x": 1}, "B": {"x": 2, "y": 1}})
    assert (p.edge_shares, p.per_edge, p.vehicles, p.dust) == (
        {"A": 2, "B": 4}, {"A": {"x": 2}, "B": {"x": 3, "y": 1}}, {"x": 5, "y": 1}, 1,
    )  # fmt: skip
    assert reference(7, 0, [], {"A": 1, "B": 2}, {"A": {"x": 1}, "B": {"x": 2, "y": 1}})["dust"] == 1


def test_every_kind_of_invalid_value_is_refused():
    integers = r"^escrow, rewards, scores and contributions must be non-negative integers$"
    for bad in [
        (-1, 0, [], {"A": 1}, {}),  # negative escrow
        (10, -1, [], {"A": 1}, {}),  # negative block reward
        (10, 0, [], {"A": -1, "B": 2}, {}),  # a negative score would pay B more than the escrow
        (10, 0, [], {"A": 1}, {"A": {"v": -1}}),  # negative contribution
        (10, 0, [], {"A": True}, {}),  # bool is not an amount
        (10, 0, [], {"A": 1.0}, {}),
    ]:
        with pytest.raises(ValueError, match=integers):
            split_payouts(*bad)
    with pytest.raises(ValueError, match=r"^escrow does not cover the block rewards$"):
        split_payouts(19, 10, ["A", "A"], {"A": 1}, {})
    assert split_payouts(20, 10, ["A", "A"], {"A": 1}, {}).dust == 0  # exactly covered is fine
