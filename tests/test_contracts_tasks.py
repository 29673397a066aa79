"""BMFLTasks on a real Anvil: every function's happy path, each revert by custom error
name, role checks, the round state machine (Training → Scoring → Finalized), the records'
Merkle root and log hash against ``chain.records``, a known-answer task settled to the
wei, double claim, reentrancy on claim, cancel/refund of a stalled task."""

from __future__ import annotations

import pytest
from web3 import Web3

from chain.artifacts import load_artifact
from chain.base import ContractClient, calldata
from chain.records import RoundLog, log_hash, pack_records, records_root
from chain.settlement import settle_when_open
from chain.tasks import Phase, Status, TasksClient
from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401

NO_LEADER = 255


class Attacker(ContractClient):
    artifact = "ClaimReentrancyAttacker"


def new_task(chain: Chain, escrow: int = 10**18, **overrides: object) -> int:
    task_id, _ = chain.tasks(chain.publisher).create_task(chain.params(**overrides), escrow)
    return task_id


def test_settles_calldata_is_web3s_encoding() -> None:
    """``settle`` is sent with :func:`chain.base.calldata` (no web3 normalisation): the
    same bytes web3 encodes, for a page with several payees, records and proofs."""
    w3 = Web3()
    tasks = w3.eth.contract(address="0x" + "11" * 20, abi=load_artifact("BMFLTasks").abi)
    log = [(1, digest("r1"), 3, 9), (2, digest("r2"), 2, 4)]
    claims = [(v, [(0, v, bytes([v]) * 41, [digest(f"p{v}{i}") for i in range(v)]), (1, 0, b"", [])]) for v in range(4)]
    fn = tasks.functions.settle(7, 2, log, claims)
    assert calldata(w3, fn) == fn._encode_transaction_data()


def test_create_task_and_its_reverts(chain: Chain) -> None:
    tasks = chain.tasks(chain.publisher)
    task_id, receipt = tasks.create_task(chain.params(challenge_period=77), 10**18)
    info = tasks.task(task_id)
    assert (info.status, info.phase, info.escrow, info.max_rounds) == (Status.ACTIVE, Phase.IDLE, 10**18, 2)
    assert info.test_set_digest == digest("test") and info.publisher == chain.publisher
    assert info.challenge_period == 77 and info.round == 0
    assert receipt.event("TaskCreated").initialModelCid == "bafy-w0"  # type: ignore[attr-defined]
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 10**18
    with reverts("InvalidTask"):
        tasks.create_task(chain.params().model_copy(update={"max_rounds": 0}), 10**18)
    with reverts("InvalidTask"):
        tasks.create_task(chain.params().model_copy(update={"round_duration": 0}), 10**18)
    with reverts("InsufficientEscrow"):
        tasks.create_task(chain.params(block_reward=10**18), 10**18)
    with reverts("InsufficientEscrow"):
        tasks.create_task(chain.params(block_reward=0), 0)
    with reverts("AccuracyOutOfRange"):
        tasks.create_task(chain.params().model_copy(update={"target_accuracy": 2_000_000}), 10**18)


# A known answer: 3 edges, 2 rounds; every edge scores every other (its own entry, here 1,
# is ignored); consensus = upper median of the other two = the larger of them.
AT = {0: [0, 1, 2], 1: [3, 4], 2: [5]}
THETAS = {0: 5, 1: 3, 2: -1, 3: 7, 4: 1, 5: 2}  # vehicle 2 flagged
SCORES_1 = {0: [1, 700_000, 500_000], 1: [800_000, 1, 520_000], 2: [810_000, 690_000, 1]}
SCORES_2 = {0: [1, 900_000, 100_000], 1: [600_000, 1, 100_000], 2: [600_000, 950_000, 1]}
# medians: r1 (810k, 700k, 520k) → leader 0; r2 (600k, 950k, 100k) → leader 1
# S = (1.41M, 1.65M, 0.62M), Σ 3.68M; C: edge 0 {v0 10, v1 6}, edge 1 {v3 14, v4 2}, edge 2 {v5 4}
# ρ_{m,ℓ} = ⌊998e15 · S_ℓ · C_{m,ℓ} / (3.68M · C_ℓ)⌋
KNOWN_PAYOUTS = {
    (0, 0): 238_991_168_478_260_869, (0, 1): 143_394_701_086_956_521, (1, 3): 391_538_722_826_086_956,
    (1, 4): 55_934_103_260_869_565, (2, 5): 168_141_304_347_826_086,
}  # fmt: skip
KNOWN_DUST = 3


def test_known_answer_task_pays_everyone_exactly_the_escrow(chain: Chain) -> None:
    task_id = new_task(chain, challenge_period=100)
    tasks = chain.tasks()
    r1 = chain.run_round(task_id, AT, THETAS, SCORES_1).event("LeaderElected")
    assert (r1.leader, r1.medians) == (0, [810_000, 700_000, 520_000])  # type: ignore[attr-defined]
    r2 = chain.run_round(task_id, AT, THETAS, SCORES_2).event("LeaderElected")
    assert (r2.leader, r2.medians) == (1, [600_000, 950_000, 100_000])  # type: ignore[attr-defined]
    books = [tasks.edge_book(task_id, e) for e in range(3)]
    assert [(b.score_sum, b.theta_total, b.rounds_recorded) for b in books] == [
        (1_410_000, 16, 2), (1_650_000, 16, 2), (620_000, 4, 2),
    ]  # fmt: skip
    assert (books[0].rounds_led, books[1].rounds_led, books[2].rounds_led) == (1, 1, 0)
    with reverts("TaskComplete"):
        chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    fin = tasks.as_sender(chain.outsider).finish_task(task_id).event("TaskFinished")
    assert (fin.available, fin.scoreTotal, fin.rounds) == (998 * 10**15, 3_680_000, 2)  # type: ignore[attr-defined]
    assert tasks.task(task_id).status == Status.FINISHED
    with reverts("SettlementClosed"):  # challenge period first
        chain.tasks(chain.outsider).settle(task_id, 0, [], [])
    receipts = chain.settle_all(task_id)
    credits = {
        (ev.edge, chain.vehicles.index(ev.payee)): ev.amount  # type: ignore[attr-defined]
        for r in receipts for ev in r.events if ev.event == "PayoutCredited"
    }  # fmt: skip
    assert credits == KNOWN_PAYOUTS
    assert tasks.owed(chain.vehicles[2]) == 0  # flagged
    assert tasks.owed(chain.edges[0]) == tasks.owed(chain.edges[1]) == 10**15
    assert tasks.task(task_id).payouts_paid == 998 * 10**15 - KNOWN_DUST
    with reverts("ClaimWindowOpen"):
        tasks.as_sender(chain.publisher).sweep(task_id)
    chain.after_claim_window(task_id)
    swept = tasks.as_sender(chain.outsider).sweep(task_id).event("TaskSwept")
    assert swept.returned == KNOWN_DUST  # type: ignore[attr-defined]
    with reverts("SettlementClosed"):
        tasks.as_sender(chain.outsider).sweep(task_id)
    payees = [chain.vehicles[v] for v in range(6)] + chain.edges[:3] + [chain.publisher]
    assert sum(tasks.owed(a) for a in payees) == 10**18
    for a in payees:
        if tasks.owed(a):
            tasks.as_sender(a).claim()
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0
    with reverts("TaskNotActive"):
        tasks.as_sender(chain.outsider).finish_task(task_id)


def test_double_claim_reverts(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.run_round(task_id, {0: [0], 1: [1], 2: [2]}, {0: 1, 1: 1, 2: 1}, {e: [5, 9, 1] for e in range(3)})
    tasks = chain.tasks(chain.edges[1])  # leader: median 9 (edges 0 and 2 gave it 9)
    before = chain.w3.eth.get_balance(chain.edges[1])
    receipt = tasks.claim()
    assert receipt.event("Claimed").amount == 10**15  # type: ignore[attr-defined]
    gas_price = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)["effectiveGasPrice"]  # type: ignore[arg-type]
    assert chain.w3.eth.get_balance(chain.edges[1]) == before + 10**15 - receipt.gas_used * gas_price
    with reverts("NothingToClaim"):
        tasks.claim()


def test_round_roles_and_phases(chain: Chain) -> None:
    task_id = new_task(chain)
    cloud = chain.tasks(chain.cloud)
    edge0 = chain.tasks(chain.edges[0])
    with reverts("NotCloud"):
        chain.tasks(chain.edges[0]).start_round(task_id, digest("g"), "g")
    with reverts("UnknownTask"):
        cloud.start_round(99, digest("g"), "g")
    with reverts("WrongPhase"):  # idle: nothing to record
        edge0.record_round(task_id, 1, digest("p"), "p", 1, [])
    with reverts("WrongPhase"):
        cloud.close_recording(task_id)
    ev = cloud.start_round(task_id, digest("g"), "bafy-g").event("RoundStarted")
    assert ev.round == 1 and ev.globalCid == "bafy-g"  # type: ignore[attr-defined]
    assert ev.deadline == chain.now() + 600  # type: ignore[attr-defined]
    info = chain.tasks().task(task_id)
    assert (info.phase, info.round, info.recorded_edges) == (Phase.TRAINING, 1, 0)
    with reverts("WrongPhase"):
        cloud.start_round(task_id, digest("g"), "g")
    with reverts("NotEdge"):
        chain.tasks(chain.outsider).record_round(task_id, 1, digest("p"), "p", 1, [])
    with reverts("WrongRound"):
        edge0.record_round(task_id, 2, digest("p"), "p", 1, [])
    with reverts("WrongPhase"):  # scores only in the scoring phase
        edge0.submit_scores(task_id, [1])
    with reverts("NothingRecorded"):  # past the deadline anyone may close, but not an empty round
        chain.past_deadline(task_id)
        chain.tasks(chain.outsider).close_recording(task_id)
    with reverts("DeadlinePassed"):
        edge0.record_round(task_id, 1, digest("p"), "p", 1, [])
    with reverts("WrongPhase"):
        cloud.finalize_round(task_id, digest("g"), "g", 1)


def test_record_round_builds_the_tree_and_the_log(chain: Chain) -> None:
    task_id = new_task(chain)
    r = chain.start(task_id)
    edge0 = chain.tasks(chain.edges[0])
    recs = chain.records(task_id, r, 0, [0, 1, 2], {0: 5, 1: 3, 2: -1})
    packed = pack_records(recs)
    raw = [packed[i : i + 117] for i in range(0, len(packed), 117)]

    def send(records: bytes, round_: int = r) -> object:
        return edge0.send(edge0.contract.functions.recordRound(task_id, round_, digest("p"), "p", 1, records, ""))

    with reverts("RecordsLength"):
        send(packed[:-1])
    with reverts("RecordsUnsorted"):
        send(raw[1] + raw[0])
    with reverts("RecordsUnsorted"):  # a vehicle twice
        send(raw[0] + raw[0])
    flagged_with_weight = bytearray(raw[2])
    flagged_with_weight[51] = 4  # θ = 4 on a flagged record
    with reverts("FlaggedWithWeight"):
        send(bytes(flagged_with_weight))
    ev = edge0.record_round(task_id, r, digest("p0"), "bafy-p0", 77, recs).event("RoundRecorded")
    assert (ev.edge, ev.round, ev.count, ev.thetaTotal, ev.samples) == (0, 1, 3, 8, 77)  # type: ignore[attr-defined]
    assert bytes.fromhex(ev.recordsRoot[2:]) == records_root(raw)  # type: ignore[attr-defined]
    with reverts("EdgeAlreadyRecorded"):
        edge0.record_round(task_id, r, digest("p0"), "p", 1, [])
    empty = chain.tasks(chain.edges[1]).record_round(task_id, r, digest("p1"), "p1", 0, []).event("RoundRecorded")
    assert (empty.count, empty.recordsRoot) == (0, "0x" + "00" * 32)  # type: ignore[attr-defined]
    tasks = chain.tasks()
    book = tasks.edge_book(task_id, 0)
    assert (book.theta_total, book.rounds_recorded, book.score_sum) == (8, 1, 0)
    entry = RoundLog(round=1, root=records_root(raw), count=3, theta_total=8)
    assert tasks.log_hash(task_id, 0) == log_hash([entry])
    assert tasks.log_hash(task_id, 3) == b"\x00" * 32
    assert tasks.task(task_id).recorded_edges == 0b11
    (recorded,) = tasks.recorded_rounds(task_id, edge=0)
    assert recorded.entry == entry and recorded.records == raw and recorded.decoded() == sorted(recs, key=lambda x: x.vehicle)
    assert recorded.preliminary_cid == "bafy-p0" and recorded.samples == 77


def test_recorded_rounds_read_each_transactions_calldata_once(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every close reads the task's earlier records (the vehicles' standings): a client asks
    the node for each ``recordRound`` transaction once, and answers the same afterwards."""
    task_id = new_task(chain)
    chain.start(task_id)
    for e in range(2):
        chain.record_edge(task_id, e, [e, e + 5], {e: 3, e + 5: 4})
    tasks = chain.tasks()
    reads: list[str] = []
    fetch = tasks.w3.eth.get_transaction
    monkeypatch.setattr(tasks.w3.eth, "get_transaction", lambda tx: reads.append(tx) or fetch(tx))
    first = tasks.recorded_rounds(task_id)
    assert len(first) == 2 and len(reads) == 2
    assert tasks.recorded_rounds(task_id) == first and tasks.recorded_rounds(task_id, edge=1) == first[1:]
    assert len(reads) == 2  # no read more for the same transactions
    assert [r.vehicle for x in first for r in x.decoded()] == [0, 5, 1, 6]
    monkeypatch.setattr("chain.tasks.CALLDATA_KEPT", 300)  # room for one transaction's two records (234 bytes)
    bounded = TasksClient(tasks.w3, tasks.address)  # a fresh client, nothing kept yet
    monkeypatch.setattr(bounded.w3.eth, "get_transaction", lambda tx: reads.append(tx) or fetch(tx))
    assert bounded.recorded_rounds(task_id) == first and bounded.recorded_rounds(task_id) == first
    assert len(reads) == 2 + 4 and list(bounded._calldata) == [reads[-1]] and bounded._calldata_bytes == 234


def test_log_hash_chains_the_rounds(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=2)
    entries = []
    for r in (1, 2):
        chain.start(task_id)
        for e in range(5):
            vs = [e, e + 5] if e < 2 else []
            chain.record_edge(task_id, e, vs, {v: 10 * r + v for v in vs})
        chain.close(task_id)  # the cloud: every active edge recorded
        chain.score(task_id, {e: [500_000] * 5 for e in range(5)})
        chain.finalize(task_id)
        recorded = [x for x in chain.tasks().recorded_rounds(task_id, edge=1) if x.round == r][0]
        entries.append(recorded.entry)
    assert chain.tasks().log_hash(task_id, 1) == log_hash(entries)
    assert [x.count for x in entries] == [2, 2] and entries[0].root != entries[1].root


def test_scores_and_finalize(chain: Chain) -> None:
    task_id = new_task(chain, target_accuracy=850_000, max_rounds=3)
    cloud = chain.tasks(chain.cloud)
    chain.start(task_id)
    for i in range(3):
        chain.record_edge(task_id, i, [i], {i: 1})
    edges = [chain.tasks(e) for e in chain.edges[:3]]
    with reverts("WrongPhase"):  # scores only once recording closed
        edges[0].submit_scores(task_id, [1, 2, 3])
    with reverts("EdgesMissing"):  # edges 3 and 4 are active and did not record
        cloud.close_recording(task_id)
    chain.close(task_id)
    assert chain.tasks().task(task_id).phase == Phase.SCORING
    with reverts("ScoresLength"):
        edges[0].submit_scores(task_id, [1, 2])
    with reverts("AccuracyOutOfRange"):
        edges[0].submit_scores(task_id, [1, 2, 1_000_001])
    with reverts("EdgeNotRecorded"):
        chain.tasks(chain.edges[3]).submit_scores(task_id, [1, 2, 3])
    with reverts("WrongPhase"):  # recording closed
        chain.tasks(chain.edges[3]).record_round(task_id, 1, digest("p"), "p", 1, [])
    # a lying edge (2) inflates itself and zeroes the others: its own score is ignored,
    # and the upper median of the other two is the honest one
    edges[0].submit_scores(task_id, [999_999, 800_000, 600_000])
    with reverts("AlreadyScored"):
        edges[0].submit_scores(task_id, [1, 1, 1])
    edges[1].submit_scores(task_id, [710_000, 999_999, 610_000])
    with reverts("ScoresMissing"):
        cloud.finalize_round(task_id, digest("g"), "g", 1)
    edges[2].submit_scores(task_id, [0, 0, 1_000_000])
    with reverts("NotCloud"):
        edges[0].finalize_round(task_id, digest("g"), "g", 1)
    with reverts("AccuracyOutOfRange"):
        cloud.finalize_round(task_id, digest("g"), "g", 1_000_001)
    with reverts("TaskNotComplete"):
        cloud.finish_task(task_id)
    r = cloud.finalize_round(task_id, digest("g1"), "g1", 860_000)
    assert r.event("LeaderElected").medians == [710_000, 800_000, 610_000]  # type: ignore[attr-defined]
    assert r.event("LeaderElected").leader == 1  # type: ignore[attr-defined]
    result = chain.tasks().round_result(task_id, 1)
    assert (result.global_digest, result.accuracy, result.leader) == (digest("g1"), 860_000, 1)
    with reverts("TaskComplete"):  # target accuracy reached
        cloud.start_round(task_id, digest("g"), "g")
    cloud.finish_task(task_id)
    assert chain.tasks().task(task_id).status == Status.FINISHED


def test_ties_go_to_the_lowest_index(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    ev = chain.run_round(task_id, {1: [1], 3: [3], 4: [4]}, {}, {e: [0, 0, 0, 7, 7] for e in (1, 3, 4)})
    elected = ev.event("LeaderElected")
    assert elected.medians == [0, 0, 0, 7, 7] and elected.leader == 3  # type: ignore[attr-defined]


def test_without_quorum_no_leader_and_no_reward(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    r = chain.run_round(task_id, {0: [0], 1: [1], 2: [2]}, {0: 1, 1: 1, 2: 1}, {0: [1, 9, 9], 1: [9, 1, 9]})
    assert r.event("NoQuorum").scorers == 2  # type: ignore[attr-defined]
    assert [ev.event for ev in r.events] == ["NoQuorum", "RoundFinalized"]
    tasks = chain.tasks()
    assert tasks.round_result(task_id, 1).leader == NO_LEADER
    assert tasks.task(task_id).rewards_paid == 0 and tasks.edge_book(task_id, 0).score_sum == 0
    fin = tasks.as_sender(chain.outsider).finish_task(task_id)
    assert fin.event("TaskSwept").returned == 10**18  # type: ignore[attr-defined]
    assert tasks.owed(chain.publisher) == 10**18


def test_cancel_after_the_stall_refunds_unspent_escrow(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=3)
    chain.run_round(task_id, {0: [0], 1: [1], 2: [2]}, {0: 1, 1: 1, 2: 1}, {e: [5, 9, 1] for e in range(3)})
    chain.start(task_id)
    outsider = chain.tasks(chain.outsider)
    with reverts("NotStalled"):
        outsider.cancel_task(task_id)
    chain.past_deadline(task_id)
    with reverts("NotStalled"):  # past the deadline, not yet stalled
        outsider.cancel_task(task_id)
    chain.stall(task_id)
    with reverts("TaskStalled"):
        chain.tasks(chain.outsider).close_recording(task_id)
    r = outsider.cancel_task(task_id)
    assert r.event("TaskCancelled").refund == 10**18 - 10**15  # type: ignore[attr-defined]
    tasks = chain.tasks()
    assert tasks.task(task_id).status == Status.CANCELLED
    assert tasks.owed(chain.publisher) == 10**18 - 10**15
    with reverts("TaskNotActive"):
        chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    with reverts("TaskNotActive"):
        outsider.cancel_task(task_id)
    tasks.as_sender(chain.publisher).claim()
    tasks.as_sender(chain.edges[1]).claim()
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0


def test_completed_task_cannot_be_cancelled(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    chain.run_round(task_id, {0: [0], 1: [1], 2: [2]}, {0: 1, 1: 1, 2: 1}, {e: [5, 9, 1] for e in range(3)})
    chain.stall(task_id)
    with reverts("TaskComplete"):
        chain.tasks(chain.outsider).cancel_task(task_id)
    chain.tasks(chain.outsider).finish_task(task_id)


def test_reentrant_claim_is_blocked(chain: Chain) -> None:
    attacker, _ = Attacker.deploy(chain.w3, chain.outsider, chain.deployment.tasks)
    params = chain.params(max_rounds=1)
    attacker.send(attacker.contract.functions.publish(params.as_tuple()), value=10**18)
    task_id = chain.tasks().task_count()
    chain.stall(task_id)
    chain.tasks(chain.outsider).cancel_task(task_id)
    assert chain.tasks().owed(attacker.address) == 10**18
    attacker.send(attacker.contract.functions.attack())
    fn = attacker.contract.functions
    assert attacker.call(fn.payments()) == 1
    assert attacker.call(fn.reentered()) is False
    nested = attacker.call(fn.nestedError())
    assert nested[:4] == chain.w3.keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert chain.w3.eth.get_balance(attacker.address) == 10**18
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0


def test_settling_before_the_chain_clock_passes_settle_after_waits_instead_of_failing(chain: Chain) -> None:
    """The cloud times the challenge period by its own clock; a chain clock that trails it
    (Anvil's, by up to a second) answers a settle sent in the block at ``settleAfter``
    with ``SettlementClosed``: ``settle_when_open`` reports "not yet" (``None``), and
    settles once a later block is mined; the same refusal to a task not finished is raised."""
    task_id = new_task(chain, challenge_period=100)
    chain.run_round(task_id, AT, THETAS, SCORES_1)
    chain.run_round(task_id, AT, THETAS, SCORES_2)
    tasks = chain.tasks(chain.outsider)
    with reverts("SettlementClosed"):  # not finished: a refusal that waiting does not cure is raised
        settle_when_open(tasks, task_id)
    tasks.finish_task(task_id)
    settle_after = tasks.task(task_id).settle_after
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [settle_after])  # type: ignore[arg-type]
    assert settle_when_open(tasks, task_id) is None
    assert tasks.task(task_id).payouts_paid == 0
    chain.mine_at(settle_after + 1)
    receipts = settle_when_open(tasks, task_id)
    assert receipts and tasks.task(task_id).payouts_paid > 0
    assert settle_when_open(tasks, task_id) == []  # every payee settled: nothing left to send
