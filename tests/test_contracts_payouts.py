"""The contract's payouts against the Python reference ``bmfl.incentives`` to the wei,
fuzzed with hypothesis on a real Anvil (vehicles move between edges, malicious
trainers, lying evaluators, uneven participation)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmfl.consensus import select_leader
from bmfl.incentives import mean_accuracy, split_payouts
from chain_fixtures import N_EDGES, N_VEHICLES, Chain, chain, chain_module  # noqa: F401

ACC = st.integers(0, 1_000_000)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    rounds = []
    for _ in range(draw(st.integers(1, 3))):
        edges = draw(st.lists(st.integers(0, N_EDGES - 1), min_size=1, max_size=N_EDGES, unique=True))
        vehicles = draw(st.lists(st.integers(0, N_VEHICLES - 1), min_size=len(edges), max_size=N_VEHICLES, unique=True))
        at: dict[int, list[int]] = {e: [] for e in edges}
        for i, v in enumerate(vehicles):  # every edge gets one, the rest anywhere
            at[edges[i] if i < len(edges) else draw(st.sampled_from(edges))].append(v)
        thetas = {v: draw(st.one_of(st.just(-1), st.integers(0, 3 * 10**10))) for v in vehicles}
        scores = {e: [draw(ACC) for _ in range(max(edges) + 1)] for e in edges}
        rounds.append({"at": at, "thetas": thetas, "scores": scores})
    block_reward = draw(st.integers(0, 10**16))
    escrow = len(rounds) * block_reward + draw(st.integers(1, 10**21))
    return {"rounds": rounds, "block_reward": block_reward, "escrow": escrow}


def lower_median(values: list[int]) -> int:
    return sorted(values)[(len(values) - 1) // 2]


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz(12)
@given(case=scenarios())
def test_contract_payouts_equal_reference(chain: Chain, case: dict[str, Any]) -> None:
    check_against_reference(chain, case)


@pytest.mark.slow
@fuzz(80)
@given(case=scenarios())
def test_contract_payouts_equal_reference_long(chain: Chain, case: dict[str, Any]) -> None:
    check_against_reference(chain, case)


def check_against_reference(chain: Chain, case: dict[str, Any]) -> None:
    """Run ``case`` on chain, finish the task, compare every credit with ``split_payouts``."""
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        rounds = case["rounds"]
        task_id, _ = chain.tasks(chain.publisher).create_task(
            chain.params(block_reward=case["block_reward"], max_rounds=len(rounds)), case["escrow"]
        )
        leaders: list[int] = []
        per_round_acc: dict[int, list[int]] = {}
        contributions: dict[int, dict[int, int]] = {}
        for r in rounds:
            chain.run_round(task_id, r["at"], r["thetas"], r["scores"])
            medians = {e: lower_median([s[e] for s in r["scores"].values()]) for e in r["at"]}
            leaders.append(int(select_leader(medians)))  # type: ignore[call-overload]
            for e, acc in medians.items():
                per_round_acc.setdefault(e, []).append(acc)
            for e, vs in r["at"].items():
                for v in vs:
                    c = contributions.setdefault(e, {})
                    c[v] = c.get(v, 0) + max(r["thetas"][v], 0)
        edge_accuracy = {e: mean_accuracy(a) for e, a in per_round_acc.items()}
        ref = split_payouts(case["escrow"], case["block_reward"], leaders, edge_accuracy, contributions)
        tasks = chain.tasks(chain.outsider)
        finished = tasks.finish_task(task_id).event("TaskFinished")
        assert finished.returned == ref.dust  # type: ignore[attr-defined]
        for v in range(N_VEHICLES):
            assert tasks.owed(chain.vehicles[v]) == ref.vehicles.get(v, 0)
        for e in range(N_EDGES):
            assert tasks.owed(chain.edges[e]) == ref.block_rewards.get(e, 0)
        assert tasks.owed(chain.publisher) == ref.dust
        assert ref.total() == case["escrow"]
        for e, per in contributions.items():
            for v, c in per.items():
                assert tasks.contribution(task_id, e, v) == c
    finally:
        chain.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
