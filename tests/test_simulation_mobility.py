"""Ring-road mobility, nearest-edge association and handover; contributions kept per
(edge, vehicle) across handovers; the payout split sums to the escrow."""

import numpy as np
import pytest
from rich.console import Console

from bmfl.incentives import split_payouts
from bmfl.mobility import RingRoad, edge_positions, nearest_edge
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.assignment import associations, members

MOBILE = {
    "name": "mobile",
    "rounds": 3,
    "vehicles": 8,
    "edges": 2,
    "data": {"name": "mnist_5k", "edge_test_samples": 200},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.05, "dp": False, "max_steps": 2},
    "assignment": {"kind": "mobility", "road_length_m": 2000.0, "speed_mps": [20.0, 30.0], "round_seconds": 30.0},
    "reward_wei": 10**18 + 7,
    "block_reward_wei": 10**15,
    "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
}


def test_edges_are_evenly_spaced_and_the_nearest_wraps_around_the_ring():
    edges = edge_positions(4, 4000)
    assert edges.tolist() == [500.0, 1500.0, 2500.0, 3500.0]
    assert nearest_edge(np.array([0.0, 999.0, 1001.0, 3999.0, 3900.0]), edges, 4000).tolist() == [0, 0, 1, 3, 3]
    assert nearest_edge(np.array([1000.0]), edges, 4000).tolist() == [0]  # tie → lower id
    with pytest.raises(ValueError):
        edge_positions(0, 10)


def test_ring_road_moves_vehicles_who_hand_over_and_keep_their_speed():
    road = RingRoad(200, 5, 10_000, (10, 30), seed=1)
    first = road.associations()
    speed = np.abs(road.velocity).copy()
    start = road.positions.copy()
    road.advance(60)
    moved = (road.positions - start) % 10_000
    expected = (road.velocity * 60) % 10_000
    assert np.allclose(moved, expected) and np.array_equal(np.abs(road.velocity), speed)
    second = road.associations()
    assert 0 < int((first != second).sum()) < 200
    assert np.array_equal(RingRoad(200, 5, 10_000, (10, 30), seed=1).associations(), first)
    still = RingRoad(10, 2, 1000, (0, 0), seed=0)
    before = still.associations()
    still.advance(100)
    assert np.array_equal(still.associations(), before)


def test_static_assignment_never_hands_over():
    config = SimulationConfig.model_validate({**MOBILE, "assignment": {"kind": "static"}})
    it = associations(config)
    a, b = next(it), next(it)
    assert np.array_equal(a, b)
    assert sorted(len(m) for m in members(a, 2)) == [4, 4]


def test_handover_keeps_contributions_per_edge_and_vehicle_and_payouts_sum_to_the_escrow():
    config = SimulationConfig.model_validate({**MOBILE, "edges": 3})  # three: a consensus quorum
    result = run_simulation(config, Console(quiet=True))
    assert sum(r.handovers for r in result.rounds) > 0
    # C_{m,ℓ} = Σ_r θ^r_{m,ℓ} over the rounds vehicle m uploaded to edge ℓ
    expected: dict[int, dict[int, int]] = {}
    for per_round in result.participation:
        for v, (edge, theta) in per_round.items():
            expected.setdefault(edge, {})
            expected[edge][v] = expected[edge].get(v, 0) + theta
    assert result.contributions == expected
    moved = [v for v in range(8) if sum(v in per for per in result.contributions.values()) > 1]
    assert moved, "some vehicle contributed at two edges"
    for v in moved:
        assert sum(result.payouts.per_edge[e].get(v, 0) for e in result.payouts.per_edge) == result.payouts.vehicles[v]
    p = result.payouts
    assert p.total() == config.reward_wei
    assert sum(p.block_rewards.values()) == len(result.rounds) * config.block_reward_wei
    assert all(w > 0 for w in p.vehicles.values()) and len(p.vehicles) == 8


def test_two_edges_have_no_consensus_and_pay_only_the_publisher():
    result = run_simulation(SimulationConfig.model_validate({**MOBILE, "rounds": 1}), Console(quiet=True))
    p = result.payouts
    assert [r.leader for r in result.rounds] == [None] and not p.block_rewards and not p.vehicles
    assert p.dust == MOBILE["reward_wei"]


def test_payouts_are_split_payouts_of_the_recorded_contributions_and_accuracies():
    config = SimulationConfig.model_validate({**MOBILE, "rounds": 2, "edges": 3})
    result = run_simulation(config, Console(quiet=True))
    leaders = [r.leader for r in result.rounds]
    scores: dict[int, int] = {}
    for r in result.rounds:
        submitted = sorted({e for per in result.participation[r.round - 1].values() for e in [per[0]]})
        for e, a in zip(submitted, r.edge_accuracies):
            scores[e] = scores.get(e, 0) + round(a * 1e6)  # S_ℓ: summed consensus scores
    again = split_payouts(config.reward_wei, config.block_reward_wei, leaders, scores, result.contributions)
    assert again == result.payouts
