"""Every rule that ``BMFLTasks`` and Python both implement, written once in Python and
checked here against the contract on one Anvil, on random inputs (hypothesis):

1. the stop rule and the rounds run (``_stopReached``, ``_roundsRun``) against
   ``bmfl.rounds.stop`` and the orchestrator's wrapper;
2. lower medians and the leader (``_medians``, ``finalizeRound``) against
   ``bmfl.consensus.edge_medians`` / ``elect_leader`` and the auditor;
3. the fixed-point scale and record size (``ACCURACY_SCALE``, ``RECORD_BYTES``);
4. the payout split (``finishTask``, ``_payEdge``, ``claim``) against
   ``bmfl.incentives.split_payouts`` (BMFL Eq. 26–29), conserved to the wei;
5. the draft → ``createTask`` mapping (``chain.tasks.task_params``) that the publisher
   sends and the cloud checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError

from bmfl.blobs.codec import blob_digest
from bmfl.consensus import edge_medians, elect_leader, lower_median
from bmfl.incentives import SCALE, mean_accuracy, split_payouts, to_fixed
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.rounds import rounds_run, stop_reached
from chain.audit import Auditor
from chain.base import decode_revert
from chain.tasks import RECORD_BYTES, Phase, Status, TaskParams, TasksClient, task_params
from chain_fixtures import N_EDGES, N_VEHICLES, Chain, chain_module, digest, reverts  # noqa: F401
from cloud_aggregator.orchestrator import stop_reached as orchestrator_stop_reached
from cloud_aggregator.publishing import check_on_chain
from service_kit.problems import ProblemError

ACC = st.integers(0, SCALE)
TIE_PRONE = st.one_of(st.sampled_from([0, 400_000, 400_001, SCALE]), ACC)


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None)


@pytest.fixture(scope="module")
def chain(chain_module: Chain) -> Chain:
    """This module's Anvil with a lean client: no client-side gas estimate (Anvil estimates
    itself), chain-id validation or ENS lookups. A reverting transaction is then mined as
    failed without its error, so expected reverts are checked with :func:`refused`."""
    for name in ("gas_estimate", "validation", "ens_name_to_address"):
        chain_module.w3.middleware_onion.remove(name)
    return chain_module


_CLIENTS: dict[tuple[int, str | None], TasksClient] = {}


def client(chain: Chain, sender: str | None = None) -> TasksClient:
    """A ``BMFLTasks`` client sending from ``sender``, built once per chain and sender."""
    key = (id(chain.w3), sender)
    if key not in _CLIENTS:
        _CLIENTS[key] = chain.tasks(sender)
    return _CLIENTS[key]


def refused(name: str, tasks: TasksClient, fn: Any) -> None:
    """``fn`` sent by ``tasks.sender`` reverts with the custom error ``name`` (``eth_call``)."""
    with reverts(name):
        try:
            fn.call({"from": tasks.sender})
        except ContractLogicError as exc:
            raise decode_revert(exc.data) from exc


@contextmanager
def reverted(chain: Chain) -> Iterator[None]:
    """Run one example on the module's chain and put the chain back afterwards."""
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        chain.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


# ---------------------------------------------------------------- 3. constants


def test_fixed_point_scale_and_record_size_are_the_contracts(chain: Chain) -> None:
    functions = client(chain).contract.functions
    assert functions.ACCURACY_SCALE().call() == SCALE == to_fixed(1.0)
    assert functions.RECORD_BYTES().call() == RECORD_BYTES == len(chain.record(3, 7).pack())


# ---------------------------------------------------------------- 1. stop rule


@st.composite
def stop_cases(draw: st.DrawFn) -> dict[str, Any]:
    max_rounds = draw(st.integers(1, 3))
    target = draw(st.one_of(st.just(0), st.integers(1, SCALE)))
    near = [a for a in (target - 1, target, target + 1, SCALE) if 0 <= a <= SCALE]
    accuracy = st.one_of(st.just(target), st.sampled_from(near), ACC)
    accuracies = draw(st.lists(accuracy, min_size=max_rounds, max_size=max_rounds))
    block_reward = draw(st.integers(0, 10**15))
    return {"max_rounds": max_rounds, "target": target, "accuracies": accuracies, "block_reward": block_reward,
            "escrow": max_rounds * block_reward + draw(st.integers(1, 10**18))}  # fmt: skip


def probe_stop(chain: Chain, task_id: int, escrow: int) -> bool:
    """The Python stop rule at the task's current state, checked against the contract:
    past the deadline ``cancelTask`` reverts ``TaskComplete`` exactly when ``_stopReached``,
    and otherwise refunds the escrow less ``_roundsRun`` block rewards."""
    info = client(chain).task(task_id)
    finalized = info.phase == Phase.FINALIZED
    stop = stop_reached(info.round, info.max_rounds, info.target_accuracy, info.last_accuracy, finalized)
    assert orchestrator_stop_reached(info) == stop
    with reverted(chain):
        chain.mine_after(info.round_duration + 1)
        tasks = client(chain, chain.outsider)
        if stop:
            refused("TaskComplete", tasks, tasks.contract.functions.cancelTask(task_id))
        else:
            refund = tasks.cancel_task(task_id).event("TaskCancelled").refund  # type: ignore[attr-defined]
            assert refund == escrow - rounds_run(info.round, finalized) * info.block_reward
    return stop


@fuzz(25)
@given(case=stop_cases())
def test_stop_rule_and_rounds_run_match_the_contract(chain: Chain, case: dict[str, Any]) -> None:
    with reverted(chain):
        params = chain.params(max_rounds=case["max_rounds"], target_accuracy=case["target"],
                              block_reward=case["block_reward"])  # fmt: skip
        task_id, _ = client(chain, chain.publisher).create_task(params, case["escrow"])
        cloud, edge = client(chain, chain.cloud), client(chain, chain.edges[0])
        assert not probe_stop(chain, task_id, case["escrow"])
        for r, accuracy in enumerate(case["accuracies"], start=1):
            cloud.start_round(task_id, digest("g"), "bafy-g")
            edge.commit_trainers(task_id, [0])
            edge.record_round(task_id, digest("p"), "bafy-p", 10, [chain.record(0, 1)])
            assert r > 1 or not probe_stop(chain, task_id, case["escrow"])
            edge.submit_scores(task_id, [accuracy])
            assert not probe_stop(chain, task_id, case["escrow"])
            cloud.finalize_round(task_id, digest("g2"), "bafy-g2", accuracy)
            if probe_stop(chain, task_id, case["escrow"]):
                refused("TaskComplete", cloud, cloud.contract.functions.startRound(task_id, digest("g"), "bafy-g"))
                client(chain, chain.outsider).finish_task(task_id)
                assert client(chain).task(task_id).status == Status.FINISHED
                break
            outsider = client(chain, chain.outsider)
            refused("TaskNotComplete", outsider, outsider.contract.functions.finishTask(task_id))
        else:
            pytest.fail(f"no stop after {case['max_rounds']} rounds")
        reached = case["target"] != 0 and case["accuracies"][r - 1] >= case["target"]
        assert r == case["max_rounds"] or reached


def test_stop_rule_needs_a_finalized_round() -> None:
    assert not stop_reached(3, 3, 500_000, 900_000, finalized=False)
    assert stop_reached(3, 3, 0, 0, finalized=True)
    assert stop_reached(1, 3, 500_000, 500_000, finalized=True)
    assert not stop_reached(1, 3, 0, SCALE, finalized=True)
    assert (rounds_run(0, False), rounds_run(2, False), rounds_run(2, True)) == (0, 1, 2)


# ---------------------------------------------------------------- 2. medians and leader


@st.composite
def rounds_with_scores(draw: st.DrawFn, max_rounds: int = 1, edges: int = N_EDGES) -> list[dict[str, Any]]:
    """Rounds where some of edges 0 … ``edges`` − 1 record (gaps below the highest index
    included), only some of those score, in any order, and vehicles move between edges."""
    out = []
    for _ in range(draw(st.integers(1, max_rounds))):
        recorded = draw(st.lists(st.integers(0, edges - 1), min_size=1, max_size=edges, unique=True))
        vehicles = draw(st.lists(st.integers(0, N_VEHICLES - 1), min_size=len(recorded), max_size=2 * edges, unique=True))
        at: dict[int, list[int]] = {e: [] for e in recorded}
        for i, v in enumerate(vehicles):
            at[recorded[i] if i < len(recorded) else draw(st.sampled_from(recorded))].append(v)
        thetas = {v: draw(st.one_of(st.just(-1), st.just(0), st.integers(1, 3 * 10**10))) for v in vehicles}
        evaluators = draw(st.lists(st.sampled_from(recorded), min_size=1, max_size=len(recorded), unique=True))
        n = max(recorded) + 1
        scores = {e: draw(st.lists(TIE_PRONE, min_size=n, max_size=n)) for e in evaluators}
        out.append({"at": at, "thetas": thetas, "scores": scores})
    return out


def play_round(chain: Chain, task_id: int, r: dict[str, Any]) -> Any:
    """Start, commit (all trainers from one edge: any edge may record a committed
    vehicle), record, score (evaluators in the drawn order) and finalize one round;
    returns its ``LeaderElected`` event."""
    client(chain, chain.cloud).start_round(task_id, digest("g"), "bafy-g")
    edges = list(r["at"])
    client(chain, chain.edges[edges[0]]).commit_trainers(task_id, sorted(v for vs in r["at"].values() for v in vs))
    for e, vs in r["at"].items():
        records = [chain.record(v, max(r["thetas"][v], 0), malicious=r["thetas"][v] < 0) for v in vs]
        client(chain, chain.edges[e]).record_round(task_id, digest(f"p{e}"), f"bafy-p{e}", 100, records)
    for e, s in r["scores"].items():
        client(chain, chain.edges[e]).submit_scores(task_id, s)
    receipt = client(chain, chain.cloud).finalize_round(task_id, digest("g2"), "bafy-g2", 900_000)
    return receipt.event("LeaderElected")


@fuzz(30)
@given(rounds=rounds_with_scores())
def test_medians_and_leader_match_finalize_round(chain: Chain, rounds: list[dict[str, Any]]) -> None:
    with reverted(chain):
        task_id, _ = client(chain, chain.publisher).create_task(chain.params(max_rounds=1), 10**18)
        r = rounds[0]
        elected = play_round(chain, task_id, r)
        recorded = set(r["at"])
        medians = edge_medians(r["scores"], recorded)
        assert elected.medians == medians  # type: ignore[attr-defined]
        assert elected.leader == elect_leader(medians, recorded)  # type: ignore[attr-defined]
        for e in recorded:
            tally = client(chain).edge_tally(task_id, e)
            assert (tally.accuracy_sum, tally.rounds_recorded) == (medians[e], 1)
        consensus = Auditor(chain.w3, chain.deployment).consensus(task_id)
        assert consensus == {1: ({e: medians[e] for e in sorted(recorded)}, elected.leader)}  # type: ignore[attr-defined]


def test_medians_and_leader_by_hand() -> None:
    assert lower_median([5, 1, 3, 2]) == 2 and lower_median([7]) == 7
    # edge 1 did not record: median 0 and not eligible, even when its scores are the best
    medians = edge_medians({0: [10, 99, 30], 2: [20, 99, 30]}, {0, 2})
    assert medians == [10, 0, 30]
    assert elect_leader([10, 99, 30], {0, 2}) == 2
    assert elect_leader([30, 0, 30], {0, 2}) == 0  # tie: smallest index
    with pytest.raises(ValueError):
        edge_medians({1: [1, 2, 3]}, {0, 2})  # an edge that did not record cannot score
    with pytest.raises(ValueError):
        edge_medians({0: [1, 2]}, {0, 2})  # one score per edge index up to the highest recorded


# ---------------------------------------------------------------- 4. payouts


@st.composite
def payout_cases(draw: st.DrawFn) -> dict[str, Any]:
    rounds = draw(rounds_with_scores(max_rounds=3, edges=3))
    block_reward = draw(st.integers(0, 10**16))
    return {"rounds": rounds, "block_reward": block_reward,
            "escrow": len(rounds) * block_reward + draw(st.integers(1, 10**21))}  # fmt: skip


def claimed(chain: Chain, account: str) -> int:
    """``claim`` from ``account`` if it is owed anything: the wei it received (its balance
    change plus the gas it paid), checked against the ``Claimed`` event."""
    tasks = client(chain, account)
    if tasks.owed(account) == 0:
        return 0
    before = chain.w3.eth.get_balance(account)  # type: ignore[arg-type]
    receipt = tasks.claim()
    raw = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)  # type: ignore[arg-type]
    received = chain.w3.eth.get_balance(account) - before + raw["gasUsed"] * raw["effectiveGasPrice"]  # type: ignore[arg-type]
    assert receipt.event("Claimed").amount == received  # type: ignore[attr-defined]
    assert tasks.owed(account) == 0
    return received


@fuzz(25)
@given(case=payout_cases())
def test_payouts_match_split_payouts_and_are_conserved(chain: Chain, case: dict[str, Any]) -> None:
    with reverted(chain):
        tasks = client(chain)
        held = chain.w3.eth.get_balance(tasks.address)
        rounds = case["rounds"]
        params = chain.params(block_reward=case["block_reward"], max_rounds=len(rounds))
        task_id, _ = client(chain, chain.publisher).create_task(params, case["escrow"])
        leaders: list[int] = []
        per_round: dict[int, list[int]] = {}
        contributions: dict[int, dict[int, int]] = {}
        for r in rounds:
            play_round(chain, task_id, r)
            medians = edge_medians(r["scores"], set(r["at"]))
            leaders.append(elect_leader(medians, set(r["at"])))
            for e, vs in r["at"].items():
                per_round.setdefault(e, []).append(medians[e])
                for v in vs:
                    contributions.setdefault(e, {})[v] = contributions.get(e, {}).get(v, 0) + max(r["thetas"][v], 0)
        accuracy = {e: mean_accuracy(a) for e, a in per_round.items()}
        ref = split_payouts(case["escrow"], case["block_reward"], leaders, accuracy, contributions)

        finish = client(chain, chain.outsider).finish_task(task_id)
        credits: dict[tuple[int, int], int] = {}
        for ev in finish.events:
            if ev.event == "PayoutCredited":
                v = chain.vehicles.index(ev.payee)  # type: ignore[attr-defined]
                credits[(ev.edge, v)] = credits.get((ev.edge, v), 0) + ev.amount  # type: ignore[attr-defined]
        assert credits == {(e, v): w for e, per in ref.per_edge.items() for v, w in per.items() if w}
        assert chain.w3.eth.get_balance(tasks.address) == held + case["escrow"]

        to_vehicles = [claimed(chain, a) for a in chain.vehicles]
        to_edges = [claimed(chain, a) for a in chain.edges]
        returned = claimed(chain, chain.publisher)  # the dust, as the chain paid it back
        assert to_vehicles == [ref.vehicles.get(v, 0) for v in range(N_VEHICLES)]
        assert to_edges == [ref.block_rewards.get(e, 0) for e in range(N_EDGES)]
        assert returned == ref.dust == finish.event("TaskFinished").returned  # type: ignore[attr-defined]
        assert sum(to_vehicles) + sum(to_edges) + returned == case["escrow"]
        assert chain.w3.eth.get_balance(tasks.address) == held


# ---------------------------------------------------------------- 5. createTask mapping


@st.composite
def drafts(draw: st.DrawFn) -> TaskDraft:
    rounds = draw(st.integers(1, 2**16 - 1))
    block_reward = draw(st.integers(0, 10**21 // rounds))
    return TaskDraft(
        rounds=rounds, category=draw(st.integers(1, 2**32 - 1)),
        target_accuracy=draw(st.one_of(st.none(), st.floats(0, 1, exclude_min=True), st.floats(0, 1e-6, exclude_min=True))),
        reward_wei=rounds * block_reward + draw(st.integers(1, 10**18)), block_reward_wei=block_reward,
        round_duration_s=draw(st.integers(1, 2**32 - 1)),
    )  # fmt: skip


@fuzz(30)
@given(draft=drafts(), model=st.binary(min_size=1, max_size=64), cid=st.text(max_size=60), test_set=st.binary(max_size=64))
def test_create_task_stores_the_drafts_values(
    chain: Chain, draft: TaskDraft, model: bytes, cid: str, test_set: bytes
) -> None:
    model_digest, test_digest = blob_digest(model).raw, blob_digest(test_set).raw
    with reverted(chain):
        params = task_params(draft, model_digest, cid, test_digest)
        task_id, receipt = client(chain, chain.publisher).create_task(params, draft.reward_wei)
        info = client(chain).task(task_id)
        stored = (info.max_rounds, info.category, info.block_reward, info.escrow, info.round_duration)
        assert stored == (draft.rounds, draft.category, draft.block_reward_wei, draft.reward_wei, draft.round_duration_s)
        assert (info.initial_model_digest, info.test_set_digest) == (model_digest, test_digest)
        if draft.target_accuracy is None:
            assert info.target_accuracy == 0
        else:  # the nearest ppm, but never 0 ("no target")
            assert 1 <= info.target_accuracy <= SCALE
            assert abs(info.target_accuracy - draft.target_accuracy * SCALE) <= max(0.5, 1 - draft.target_accuracy * SCALE)
        assert TaskParams.from_created(receipt.event("TaskCreated")) == params

        # the cloud's check reads the chain through the same mapping: the draft passes, a changed one does not
        access = SimpleNamespace(tasks=client(chain), deployment=chain.deployment)
        spec = TaskSpec(task_id=task_id, **draft.model_dump())
        check_on_chain(access, spec, model, cid, "0x" + test_digest.hex())  # type: ignore[arg-type]
        other = spec.model_copy(update={"rounds": draft.rounds % (2**16 - 1) + 1})
        with pytest.raises(ProblemError) as mismatch:
            check_on_chain(access, other, model, cid, "0x" + test_digest.hex())  # type: ignore[arg-type]
        assert (mismatch.value.status, mismatch.value.reason) == (409, "chain_mismatch")
        assert mismatch.value.detail.startswith("max_rounds:")
