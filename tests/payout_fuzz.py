"""The payout fuzz shared by ``test_contracts_payouts.py`` and its long run in
``test_contracts_payouts_long.py`` (a file of its own, so pytest-xdist's ``--dist loadfile``
runs the two on different workers, each with its own Anvil): hypothesis scenarios of 3–6
edges, 1–3 rounds, vehicles moving between edges, θ of 0 and flagged records, random scores
with and without a quorum; and the check of one scenario on a real chain against
``bmfl.incentives.split_payouts`` and an independent exact-fraction reference."""

from __future__ import annotations

from fractions import Fraction
from math import floor
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bmfl.consensus import edge_medians, elect_leader
from bmfl.incentives import split_payouts
from chain_fixtures import N_EDGES, N_VEHICLES, Chain

ACC = st.one_of(st.sampled_from([0, 1, 1_000_000]), st.integers(0, 1_000_000))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n_edges = draw(st.integers(3, N_EDGES + 1))  # a sixth edge is added to the registry for the task
    rounds = []
    for _ in range(draw(st.integers(1, 3))):
        edges = sorted(draw(st.lists(st.integers(0, n_edges - 1), min_size=1, max_size=n_edges, unique=True)))
        vehicles = draw(st.lists(st.integers(0, N_VEHICLES - 1), min_size=len(edges), max_size=N_VEHICLES, unique=True))
        at: dict[int, list[int]] = {e: [] for e in edges}
        for i, v in enumerate(vehicles):  # every recording edge gets one, the rest anywhere
            at[edges[i] if i < len(edges) else draw(st.sampled_from(edges))].append(v)
        thetas = {v: draw(st.one_of(st.just(-1), st.just(0), st.integers(1, 3 * 10**10))) for v in vehicles}
        scorers = draw(st.lists(st.sampled_from(edges), min_size=1, max_size=len(edges), unique=True))
        scores = {e: [draw(ACC) for _ in range(max(edges) + 1)] for e in scorers}
        rounds.append({"at": at, "thetas": thetas, "scores": scores})
    block_reward = draw(st.integers(0, 10**16))
    escrow = len(rounds) * block_reward + draw(st.one_of(st.integers(1, 10**21), st.integers(1, 1000)))
    return {"edges": n_edges, "rounds": rounds, "block_reward": block_reward, "escrow": escrow}


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def exact_payout(available: int, score: int, theta: int, score_total: int, theta_total: int) -> int:
    """One payee's payout, written independently: ⌊available · S_ℓ/ΣS · C_{m,ℓ}/C_ℓ⌋ in exact fractions."""
    if not (score_total and theta_total and theta):
        return 0
    return floor(Fraction(available) * Fraction(score, score_total) * Fraction(theta, theta_total))


def check_against_reference(chain: Chain, case: dict[str, Any]) -> None:
    """Run ``case`` on chain; finish, settle and sweep; compare every credit, block reward
    and the sweep with ``split_payouts`` and :func:`exact_payout`."""
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    added = case.get("edges", 3) > len(chain.edges)
    if added:  # the sixth edge: the outsider's account
        chain.registry(chain.operator).add_edge(chain.outsider)
        chain.edges.append(chain.outsider)
    try:
        rounds = case["rounds"]
        task_id, _ = chain.tasks(chain.publisher).create_task(
            chain.params(block_reward=case["block_reward"], max_rounds=len(rounds), challenge_period=30), case["escrow"]
        )
        leaders: list[int] = []
        scores_sum: dict[int, int] = {e: 0 for e in range(len(chain.edges))}
        contributions: dict[int, dict[int, int]] = {}
        for r in rounds:
            receipt = chain.run_round(task_id, r["at"], r["thetas"], r["scores"])
            medians = edge_medians(r["scores"], set(r["at"]))
            if medians is None:
                assert receipt.event("NoQuorum").scorers == len(r["scores"])  # type: ignore[attr-defined]
            else:
                leader = elect_leader(medians, set(r["at"]))
                elected = receipt.event("LeaderElected")
                assert (elected.leader, elected.medians) == (leader, medians)  # type: ignore[attr-defined]
                leaders.append(leader)
                for e in r["at"]:
                    scores_sum[e] += medians[e]
            for e, vs in r["at"].items():
                for v in vs:
                    c = contributions.setdefault(e, {})
                    c[v] = c.get(v, 0) + max(r["thetas"][v], 0)
        ref = split_payouts(case["escrow"], case["block_reward"], leaders, scores_sum, contributions)
        tasks = chain.tasks(chain.outsider)
        for e in range(len(chain.edges)):
            book = tasks.edge_book(task_id, e)
            assert (book.score_sum, book.theta_total) == (scores_sum[e], sum(contributions.get(e, {}).values()))
        finish = tasks.finish_task(task_id)
        info = tasks.task(task_id)
        assert info.score_total == sum(scores_sum.values())
        assert info.rewards_paid == len(leaders) * case["block_reward"]
        credits: dict[tuple[int, int], int] = {}
        if info.score_total == 0:  # no consensus in any round: everything back at once
            swept = finish.event("TaskSwept").returned  # type: ignore[attr-defined]
        else:
            for receipt in chain.settle_all(task_id):
                for ev in receipt.events:
                    if ev.event == "PayoutCredited" and ev.amount:  # type: ignore[attr-defined]
                        credits[(ev.edge, ev.vehicle)] = credits.get((ev.edge, ev.vehicle), 0) + ev.amount  # type: ignore[attr-defined]
            chain.after_claim_window(task_id)
            swept = tasks.sweep(task_id).event("TaskSwept").returned  # type: ignore[attr-defined]
        assert credits == {(e, v): w for e, per in ref.per_edge.items() for v, w in per.items() if w}
        for e, per in contributions.items():
            for v, c in per.items():
                want = exact_payout(ref.available, scores_sum[e], c, sum(scores_sum.values()), sum(per.values()))
                assert credits.get((e, v), 0) == want
        assert swept == ref.dust
        for e in range(len(chain.edges)):
            assert tasks.owed(chain.edges[e]) == ref.block_rewards.get(e, 0)
        assert sum(credits.values()) + info.rewards_paid + swept == case["escrow"] == ref.total()
        assert tasks.owed(chain.publisher) == swept
    finally:
        if added:
            chain.edges.pop()
        chain.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
