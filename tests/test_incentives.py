"""Payout split (BMFL Eq. 26–29) in integer wei, as ``BMFLTasks.settle`` computes it:
each payee's exact rational share floored once; known answers and exact conservation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmfl.incentives import SCALE, split_payouts, to_fixed


def test_fixed_point():
    assert SCALE == 10**6
    assert to_fixed(0.9731) == 973_100
    assert to_fixed(1.0) == SCALE


def test_known_answer_by_hand():
    # escrow 1000 wei, ρ_b = 10, 3 rounds (leaders A, A, B) → ρ_ava = 970
    # S: A = 0.6, B = 0.3, C = 0.1 → shares (display) ⌊970·6/10⌋ = 582, 291, 97
    # A: v1 2, v2 1 → ⌊970·0.6·2/3⌋ = 388, ⌊970·0.6/3⌋ = 194
    # B: v1 1, v3 1, v4 1 → 97 each (0 left)
    # C: nobody contributed → 97 back to the publisher
    p = split_payouts(
        1000,
        10,
        ["A", "A", "B"],
        {"A": 600_000, "B": 300_000, "C": 100_000},
        {"A": {"v1": 2, "v2": 1}, "B": {"v1": 1, "v3": 1, "v4": 1}, "C": {"v5": 0}},
    )
    assert p.available == 970
    assert p.edge_shares == {"A": 582, "B": 291, "C": 97}
    assert p.block_rewards == {"A": 20, "B": 10}
    assert p.per_edge == {"A": {"v1": 388, "v2": 194}, "B": {"v1": 97, "v3": 97, "v4": 97}}
    assert p.vehicles == {"v1": 485, "v2": 194, "v3": 97, "v4": 97}
    assert p.dust == 970 - 970 + 97  # 97 from C, no floor remainder here
    assert p.total() == 1000


def test_floor_remainders_go_to_the_publisher():
    p = split_payouts(10, 0, [], {"A": 1, "B": 1, "C": 1}, {"A": {"x": 1, "y": 1, "z": 1}, "B": {"x": 1}, "C": {"y": 1}})
    # A pays ⌊10/9⌋ = 1 to each; B pays ⌊10/3⌋ = 3 to x; C pays 3 to y → 9 paid, dust 1
    assert p.vehicles == {"x": 4, "y": 4, "z": 1}
    assert p.dust == 1


def test_one_floor_per_payee_not_two():
    # available 7, S = (1, 2), B: x 2, y 1. Flooring the edge share first (⌊7·2/3⌋ = 4, then
    # ⌊4·2/3⌋ = 2) would lose a wei; one floor: x ⌊7·2·2/9⌋ = 3, y ⌊7·2·1/9⌋ = 1
    p = split_payouts(7, 0, [], {"A": 1, "B": 2}, {"A": {"x": 1}, "B": {"x": 2, "y": 1}})
    assert p.per_edge == {"A": {"x": 2}, "B": {"x": 3, "y": 1}}
    assert (p.vehicles, p.dust, p.edge_shares) == ({"x": 5, "y": 1}, 1, {"A": 2, "B": 4})


def test_flagged_and_zero_theta_vehicles_earn_nothing_and_leave_the_share_to_the_others():
    p = split_payouts(1000, 0, [], {"A": 5}, {"A": {"flagged": 0, "honest": 3}})
    assert p.per_edge == {"A": {"flagged": 0, "honest": 1000}} and p.dust == 0


def test_invalid_inputs():
    with pytest.raises(ValueError, match="block rewards"):
        split_payouts(5, 10, ["A"], {"A": 1}, {})
    with pytest.raises(ValueError, match="integers"):
        split_payouts(100, 1, ["A"], {"A": 0.5}, {})
    with pytest.raises(ValueError, match="without a score"):
        split_payouts(100, 1, ["A"], {"A": 1}, {"B": {"v": 1}})


def test_zero_scores_everywhere_returns_everything_to_the_publisher():
    p = split_payouts(100, 5, ["A"], {"A": 0}, {"A": {"v": 3}})
    assert p.vehicles == {} and p.per_edge == {} and p.dust == 95 and p.total() == 100


edges = st.sampled_from(["e0", "e1", "e2", "e3"])
vehicles = st.sampled_from([f"v{i}" for i in range(8)])


@settings(max_examples=300, deadline=None)
@given(
    escrow=st.integers(0, 10**30),
    block_reward=st.integers(0, 10**24),
    rounds=st.integers(0, 20),
    acc=st.dictionaries(edges, st.integers(0, SCALE), min_size=1),
    data=st.data(),
)
def test_payouts_plus_rewards_plus_dust_equal_escrow(escrow, block_reward, rounds, acc, data):
    block_reward = min(block_reward, escrow // rounds) if rounds else block_reward
    edge_ids = sorted(acc)
    leaders = data.draw(st.lists(st.sampled_from(edge_ids), min_size=rounds, max_size=rounds))
    contributions = {
        e: data.draw(st.dictionaries(vehicles, st.integers(0, 50 * SCALE), max_size=6))
        for e in data.draw(st.lists(st.sampled_from(edge_ids), unique=True))
    }
    p = split_payouts(escrow, block_reward, leaders, acc, contributions)
    assert sum(p.vehicles.values()) + sum(p.block_rewards.values()) + p.dust == escrow
    assert p.dust >= 0 and all(v >= 0 for v in p.vehicles.values())
    assert sum(p.edge_shares.values()) <= p.available
    for edge, per in p.per_edge.items():  # floors of exact shares: never above the edge's exact share,
        paid, exact = sum(per.values()) * sum(acc.values()), p.available * acc[edge]  # at most a wei short each
        assert exact - len(per) * sum(acc.values()) < paid <= exact
