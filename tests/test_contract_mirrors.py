"""Every rule that ``BMFLTasks`` and Python both implement, written once in Python and
checked here against the contract on one Anvil, on random inputs (hypothesis):

1. the stop rule and the rounds run (``_stopReached``) against ``bmfl.rounds.stop`` and
   the orchestrator's wrapper; a stalled task refunds the escrow less the rewards paid;
2. upper medians of the *other* scorers, the quorum and the leader (``_medians``,
   ``_credit``, ``finalizeRound``) against ``bmfl.consensus.edge_medians`` / ``elect_leader``;
3. the fixed-point scale and record size (``ACCURACY_SCALE``, ``RECORD_BYTES``,
   ``MIN_QUORUM``) and the records' Merkle root and log hash (``chain.records``);
4. the payout of one payee (``payoutFor``) against ``bmfl.incentives.split_payouts``
   (the whole settlement is fuzzed in tests/test_contracts_payouts.py);
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
from bmfl.consensus import MIN_QUORUM, edge_medians, elect_leader, upper_median
from bmfl.incentives import SCALE, split_payouts, to_fixed
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.rounds import rounds_run, stop_reached
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
    assert functions.RECORD_BYTES().call() == RECORD_BYTES == len(chain.record(1, 1, 0, 3, 7).pack())
    assert functions.MIN_QUORUM().call() == MIN_QUORUM == 3
    assert functions.NO_LEADER().call() == 255


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
        chain.stall(task_id)
        tasks = client(chain, chain.outsider)
        if stop:
            refused("TaskComplete", tasks, tasks.contract.functions.cancelTask(task_id))
        else:
            refund = tasks.cancel_task(task_id).event("TaskCancelled").refund  # type: ignore[attr-defined]
            assert refund == escrow - info.rewards_paid
    return stop


@fuzz(25)
@given(case=stop_cases())
def test_stop_rule_and_rounds_run_match_the_contract(chain: Chain, case: dict[str, Any]) -> None:
    with reverted(chain):
        params = chain.params(max_rounds=case["max_rounds"], target_accuracy=case["target"],
                              block_reward=case["block_reward"])  # fmt: skip
        task_id, _ = client(chain, chain.publisher).create_task(params, case["escrow"])
        cloud = client(chain, chain.cloud)
        assert not probe_stop(chain, task_id, case["escrow"])
        for r, accuracy in enumerate(case["accuracies"], start=1):
            chain.start(task_id)
            for e in range(3):
                chain.record_edge(task_id, e, [e], {e: 1})
            assert r > 1 or not probe_stop(chain, task_id, case["escrow"])
            chain.close(task_id)
            chain.score(task_id, {e: [accuracy] * 3 for e in range(3)})
            assert not probe_stop(chain, task_id, case["escrow"])
            chain.finalize(task_id, accuracy)
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
    """Start, record (signed records), close, score (evaluators in the drawn order) and
    finalize one round; returns the finalize receipt."""
    return chain.run_round(task_id, r["at"], r["thetas"], r["scores"])


@fuzz(20)
@given(rounds=rounds_with_scores())
def test_medians_quorum_and_leader_match_finalize_round(chain: Chain, rounds: list[dict[str, Any]]) -> None:
    with reverted(chain):
        task_id, _ = client(chain, chain.publisher).create_task(chain.params(max_rounds=1), 10**18)
        r = rounds[0]
        receipt = play_round(chain, task_id, r)
        recorded = set(r["at"])
        medians = edge_medians(r["scores"], recorded)
        result = client(chain).round_result(task_id, 1)
        if medians is None:
            assert receipt.event("NoQuorum").scorers == len(r["scores"]) < MIN_QUORUM  # type: ignore[attr-defined]
            assert result.leader == 255 and client(chain).task(task_id).rewards_paid == 0
            return
        elected = receipt.event("LeaderElected")
        assert elected.medians == medians  # type: ignore[attr-defined]
        assert elected.leader == result.leader == elect_leader(medians, recorded)  # type: ignore[attr-defined]
        for e in recorded:
            book = client(chain).edge_book(task_id, e)
            assert (book.score_sum, book.rounds_recorded) == (medians[e], 1)


def test_medians_and_leader_by_hand() -> None:
    assert upper_median([5, 1, 3, 2]) == 3 and upper_median([7]) == 7 and upper_median([1, 9]) == 9
    # edge 1 did not record: median 0 and not eligible; each edge's own score is ignored
    scores = {0: [99, 5, 30, 7], 2: [20, 5, 99, 8], 3: [10, 5, 40, 99]}
    medians = edge_medians(scores, {0, 2, 3})
    assert medians == [20, 0, 40, 8]  # edge 0: others (20, 10) → 20; edge 2: (30, 40) → 40; edge 3: (7, 8) → 8
    assert elect_leader(medians, {0, 2, 3}) == 2
    assert elect_leader([30, 99, 30], {0, 2}) == 0  # tie: smallest index; edge 1 is not eligible
    assert edge_medians({0: [1, 2], 1: [3, 4]}, {0, 1}) is None  # two scorers: no quorum
    with pytest.raises(ValueError):
        edge_medians({1: [1, 2, 3]}, {0, 2})  # an edge that did not record cannot score
    with pytest.raises(ValueError):
        edge_medians({0: [1, 2]}, {0, 2})  # one score per edge index up to the highest recorded


# ---------------------------------------------------------------- 4. payouts


@fuzz(15)
@given(
    available=st.integers(1, 2**96 - 1), scores=st.lists(st.integers(0, 2**40), min_size=3, max_size=3),
    thetas=st.lists(st.integers(0, 2**40), min_size=2, max_size=2),
)  # fmt: skip
def test_payout_for_matches_split_payouts(chain: Chain, available: int, scores: list[int], thetas: list[int]) -> None:
    """``payoutFor`` on a finished task vs ``split_payouts`` for the same S_ℓ and C_{m,ℓ}."""
    with reverted(chain):
        chain.w3.provider.make_request("anvil_setBalance", [chain.publisher, hex(2**100)])  # type: ignore[arg-type]
        task_id, _ = client(chain, chain.publisher).create_task(chain.params(max_rounds=1, block_reward=0), available)
        medians = [s % (SCALE + 1) for s in scores]
        score_rows = {0: [1, medians[1], medians[2]], 1: [medians[0], 1, medians[2]], 2: [medians[0], medians[1], 1]}
        at = {0: [0, 1], 1: [2], 2: [3]}
        chain.run_round(task_id, at, {0: thetas[0], 1: thetas[1], 2: 1, 3: 1}, score_rows)
        client(chain, chain.outsider).finish_task(task_id)
        ref = split_payouts(available, 0, [0] if sum(medians) else [], dict(enumerate(medians)),
                            {0: {0: thetas[0], 1: thetas[1]}, 1: {2: 1}, 2: {3: 1}})  # fmt: skip
        for v, theta in enumerate(thetas):
            assert client(chain).payout_for(task_id, 0, theta) == ref.per_edge.get(0, {}).get(v, 0)


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
