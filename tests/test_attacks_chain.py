"""Issue 16's attacks on the contract, each on a real Anvil and each able to fail:

(a) a lying edge records early and scores at once: ``WrongPhase``; the cloud cannot close
    recording while an active edge has not recorded (``EdgesMissing``), honest edges still record;
(b) two edges: a liar's 0 cannot zero the other (``NoQuorum``, no leader, no reward); with
    3–5 scorers and f < n/2 liars (honest edges scored 0, themselves 100 %), no honest edge
    is pushed below its lowest honest score and no liar above its highest, so a worse liar
    never leads (hypothesis, against the ``bmfl.consensus`` mirror);
(c) an edge records a vehicle that never chose it (signature for another edge, round or
    task, by another key, an unknown or a wrong-category vehicle): anyone voids the record
    with a Merkle proof, its θ leaves C_ℓ and it earns nothing; a valid record cannot be voided;
(d) sybil payees: one edge records 5,000+ registered vehicles; ``finishTask`` costs what it
    costs with 10 payees, settlement runs in pages under the gas cap, payouts sum to the
    available escrow less dust to the wei, and the sweep returns the rest (slow);
(e) every stall (idle, training, scoring, between rounds) refunds the unspent escrow exactly;
    a task whose stop rule holds cannot be cancelled, only finished.
"""

from __future__ import annotations

import json
import urllib.request
from fractions import Fraction
from math import floor
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmfl.consensus import edge_medians, elect_leader
from bmfl.protocol.signing import sign, update_message
from chain.records import TrainerRecord, record_proofs
from chain.settlement import edge_logs, settle_task
from chain.tasks import Phase, Status
from chain_fixtures import N_EDGES, Chain, chain, chain_module, digest, reverts  # noqa: F401

NO_LEADER = 255
GAS_CAP = 2**24


def new_task(chain: Chain, escrow: int = 10**18, **overrides: object) -> int:
    task_id, _ = chain.tasks(chain.publisher).create_task(chain.params(**overrides), escrow)
    return task_id


# ---------------------------------------------------------------- (a) the lying edge


def test_a_lying_edge_cannot_score_early_nor_close_the_round(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    chain.start(task_id)
    liar = chain.tasks(chain.edges[0])
    chain.record_edge(task_id, 0, [0], {0: 1})
    with reverts("WrongPhase") as info:  # the old attack: scores while training moved the round to scoring
        liar.submit_scores(task_id, [1_000_000])
    assert (info.value.args_by_name["expected"], info.value.args_by_name["actual"]) == (Phase.SCORING, Phase.TRAINING)
    with reverts("NotCloud"):  # before the deadline only the cloud closes recording
        liar.close_recording(task_id)
    with reverts("EdgesMissing") as missing:
        chain.tasks(chain.cloud).close_recording(task_id)
    assert missing.value.args_by_name["missing"] == 0b11110
    assert chain.tasks().task(task_id).phase == Phase.TRAINING
    for e in range(1, N_EDGES):  # honest edges still record
        chain.record_edge(task_id, e, [e], {e: 1})
        if e < N_EDGES - 1:
            with reverts("EdgesMissing"):
                chain.tasks(chain.cloud).close_recording(task_id)
    closed = chain.tasks(chain.cloud).close_recording(task_id).event("RecordingClosed")
    assert (closed.recordedEdges, closed.absentEdges) == (0b11111, 0)  # type: ignore[attr-defined]
    # the liar zeroes everyone and gives itself 100 %: the honest majority decides
    chain.score(task_id, {0: [1_000_000, 0, 0, 0, 0]} | {e: [300_000, 800_000, 700_000, 600_000, 500_000] for e in range(1, 5)})
    elected = chain.finalize(task_id).event("LeaderElected")
    assert elected.leader == 1 and elected.medians == [300_000, 800_000, 700_000, 600_000, 500_000]  # type: ignore[attr-defined]


def test_after_the_deadline_anyone_closes_and_absent_edges_are_logged(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    chain.start(task_id)
    chain.record_edge(task_id, 2, [2], {2: 1})
    chain.past_deadline(task_id)
    closed = chain.tasks(chain.outsider).close_recording(task_id).event("RecordingClosed")
    assert (closed.recordedEdges, closed.absentEdges) == (0b100, 0b11011)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- (b) medians and liars


def test_two_edges_a_liars_zero_cannot_zero_the_other(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    # edge 0 honest, edge 1 lies: scores edge 0 at 0, itself at 100 %
    r = chain.run_round(task_id, {0: [0], 1: [1]}, {0: 5, 1: 5}, {0: [900_000, 400_000], 1: [0, 1_000_000]})
    assert r.event("NoQuorum").scorers == 2  # type: ignore[attr-defined]
    tasks = chain.tasks()
    assert tasks.round_result(task_id, 1).leader == NO_LEADER
    assert tasks.owed(chain.edges[1]) == tasks.owed(chain.edges[0]) == 0
    assert tasks.edge_book(task_id, 1).score_sum == tasks.edge_book(task_id, 0).score_sum == 0
    fin = tasks.as_sender(chain.outsider).finish_task(task_id)
    assert fin.event("TaskSwept").returned == 10**18  # type: ignore[attr-defined]  # the liar's vehicle gets nothing


@st.composite
def liar_rounds(draw: st.DrawFn) -> dict[str, Any]:
    recorded = sorted(draw(st.lists(st.integers(0, N_EDGES - 1), min_size=3, max_size=N_EDGES, unique=True)))
    n = len(recorded)
    liars = draw(st.lists(st.sampled_from(recorded), max_size=(n - 1) // 2, unique=True))  # f < n/2
    width = max(recorded) + 1
    truth = {e: draw(st.integers(1, 1_000_000)) for e in recorded}
    scores = {}
    for ev in recorded:
        if ev in liars:
            scores[ev] = [1_000_000 if e in liars else 0 for e in range(width)]
        else:  # an honest evaluator: the truth, give or take its own test noise
            scores[ev] = [max(0, min(1_000_000, truth.get(e, 0) + draw(st.integers(-2000, 2000)))) for e in range(width)]
    return {"recorded": recorded, "liars": liars, "truth": truth, "scores": scores}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=liar_rounds())
def test_a_liar_minority_cannot_zero_an_honest_edge_nor_lift_itself(chain: Chain, case: dict[str, Any]) -> None:
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        task_id = new_task(chain, max_rounds=1)
        recorded, liars, scores = case["recorded"], set(case["liars"]), case["scores"]
        elected = chain.run_round(task_id, {e: [e] for e in recorded}, {e: 1 for e in recorded}, scores).event("LeaderElected")
        medians = edge_medians(scores, set(recorded))
        assert medians is not None
        assert elected.medians == medians and elected.leader == elect_leader(medians, set(recorded))  # type: ignore[attr-defined]
        honest = [ev for ev in recorded if ev not in liars]
        for e in recorded:
            given_by_honest = [scores[ev][e] for ev in honest if ev != e]
            if e in liars:
                assert medians[e] <= max(given_by_honest)
            else:
                assert medians[e] >= min(given_by_honest)  # never below what the honest gave it
        best_honest_truth = max(case["truth"][e] for e in honest)
        if all(case["truth"][e] + 4000 < best_honest_truth for e in liars):  # worse by more than the noise
            assert elected.leader not in liars  # type: ignore[attr-defined]
    finally:
        chain.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


# ---------------------------------------------------------------- (c) records a vehicle never signed


def proof_for(chain: Chain, task_id: int, edge: int, vehicle: int, round_: int = 1) -> tuple[list[Any], int, int, bytes, list[bytes]]:
    """(log, log index, position, packed record, proof) of ``vehicle``'s record at ``edge``."""
    log = edge_logs(chain.tasks(), task_id)[edge]
    for index, recorded in enumerate(log.rounds):
        if recorded.round != round_:
            continue
        for position, packed in enumerate(recorded.records):
            if TrainerRecord.unpack(packed).vehicle == vehicle:
                return log.entries, index, position, packed, record_proofs(recorded.records)[position]
    raise LookupError(vehicle)


def test_records_a_vehicle_never_signed_are_voided_and_earn_nothing(chain: Chain) -> None:
    registry = chain.registry(chain.outsider)
    other_category, _ = registry.register_vehicle(2, 0, 50, digest("other"))  # holds category 2 only
    outsider_key = Account.from_key(bytes.fromhex(_dev_key_hex(3)))
    assert outsider_key.address == chain.outsider
    task_id = new_task(chain, max_rounds=1, challenge_period=1000)
    r = chain.start(task_id)
    forged = [
        chain.record(task_id, r, 0, 0, 10),  # valid
        chain.record(task_id, r, 0, 1, 20, signed_edge=chain.edges[1]),  # made for edge 1
        chain.record(task_id, r, 0, 2, 30, signer=chain.vehicle_key(3)),  # another key
        chain.record(task_id, r, 0, 3, 40, signed_round=2),  # another round
        chain.record(task_id, r, 0, 4, 50, signed_task=task_id + 1),  # another task
        chain.record(task_id, r, 0, 5, 60, update=digest("not the upload")).model_copy(update={"update_digest": digest("x")}),
        chain.record(task_id, r, 0, other_category, 70, signer=outsider_key),  # wrong category
        chain.record(task_id, r, 0, 900, 80, signer=chain.vehicle_key(0)),  # no such vehicle
    ]
    edge0 = chain.tasks(chain.edges[0])
    edge0.record_round(task_id, r, digest("p0"), "p0", 1, forged)
    for e in (1, 2):
        chain.record_edge(task_id, e, [6 + e], {6 + e: 5})
    assert chain.tasks().edge_book(task_id, 0).theta_total == 360
    faults = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, other_category: 2, 900: 1}  # Fault: BadSignature, UnknownVehicle, WrongCategory
    outsider = chain.tasks(chain.outsider)
    log, index, position, packed, proof = proof_for(chain, task_id, 0, 0)
    with reverts("RecordValid"):
        outsider.challenge_record(task_id, 0, log, index, position, packed, proof)
    with reverts("BadProof"):
        outsider.challenge_record(task_id, 0, log, index, position ^ 1, packed, proof)
    with reverts("LogMismatch"):
        outsider.challenge_record(task_id, 1, log, index, position, packed, proof)
    theta_left = 360
    for vehicle, fault in list(faults.items())[:3]:  # three challenged while the task runs
        theta_left = _void(chain, task_id, vehicle, fault, theta_left)
    chain.close(task_id)
    chain.score(task_id, {e: [700_000, 600_000, 500_000] for e in range(3)})
    chain.finalize(task_id)
    outsider.finish_task(task_id)
    for vehicle, fault in list(faults.items())[3:]:  # the rest during the challenge period
        theta_left = _void(chain, task_id, vehicle, fault, theta_left)
    assert theta_left == 10
    log, index, position, packed, proof = proof_for(chain, task_id, 0, 1)
    with reverts("AlreadyVoided"):
        outsider.challenge_record(task_id, 0, log, index, position, packed, proof)
    receipts = chain.settle_all(task_id)
    credited = {(ev.edge, ev.vehicle): ev.amount for rc in receipts for ev in rc.events if ev.event == "PayoutCredited"}  # type: ignore[attr-defined]
    info = chain.tasks().task(task_id)
    available = info.escrow - info.rewards_paid
    # edge 0's whole share goes to its one valid record; the voided ones get nothing
    s0 = chain.tasks().edge_book(task_id, 0).score_sum
    assert (s0, info.score_total) == (700_000, 1_800_000)
    assert credited[(0, 0)] == floor(Fraction(available * s0, info.score_total))
    assert [k for k in credited if k[0] == 0] == [(0, 0)]
    with reverts("ChallengesClosed"):
        outsider.challenge_record(task_id, 0, *proof_for(chain, task_id, 0, 2))


def _void(chain: Chain, task_id: int, vehicle: int, fault: int, theta_left: int) -> int:
    log, index, position, packed, proof = proof_for(chain, task_id, 0, vehicle)
    ev = chain.tasks(chain.outsider).challenge_record(task_id, 0, log, index, position, packed, proof).event("RecordVoided")
    assert (ev.vehicle, ev.fault, ev.edge, ev.round) == (vehicle, fault, 0, 1)  # type: ignore[attr-defined]
    assert chain.tasks().voided(task_id, 0, index, vehicle)
    theta_left -= TrainerRecord.unpack(packed).theta
    assert chain.tasks().edge_book(task_id, 0).theta_total == theta_left
    return theta_left


def _dev_key_hex(index: int) -> str:
    from chain.anvil import dev_key

    return dev_key(index)[2:]


# ---------------------------------------------------------------- (e) stalls and refunds


def _stalled_refund(chain: Chain, task_id: int, expected: int) -> None:
    outsider = chain.tasks(chain.outsider)
    with reverts("NotStalled"):
        outsider.cancel_task(task_id)
    chain.stall(task_id)
    with reverts("TaskStalled"):
        chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    held = chain.w3.eth.get_balance(chain.deployment.tasks)
    refund = outsider.cancel_task(task_id).event("TaskCancelled").refund  # type: ignore[attr-defined]
    assert refund == expected == chain.tasks().owed(chain.publisher)
    claimed = chain.tasks(chain.publisher).claim().event("Claimed").amount  # type: ignore[attr-defined]
    assert claimed == expected and chain.w3.eth.get_balance(chain.deployment.tasks) == held - expected


THREE = ({0: [0], 1: [1], 2: [2]}, {0: 1, 1: 1, 2: 1}, {e: [5, 9, 1] for e in range(3)})


def test_stalled_before_the_first_round_refunds_everything(chain: Chain) -> None:
    _stalled_refund(chain, new_task(chain, escrow=123_456_789, block_reward=7, max_rounds=2), 123_456_789)


def test_stalled_in_training_refunds_all_but_paid_rewards(chain: Chain) -> None:
    task_id = new_task(chain, escrow=10**18 + 3, max_rounds=3)
    chain.run_round(task_id, *THREE)
    chain.start(task_id)
    chain.record_edge(task_id, 0, [0], {0: 1})
    _stalled_refund(chain, task_id, 10**18 + 3 - 10**15)
    assert chain.tasks().owed(chain.edges[1]) == 10**15  # the block reward earned stays the leader's


def test_stalled_in_scoring_refunds(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=2)
    chain.start(task_id)
    for e in range(3):
        chain.record_edge(task_id, e, [e], {e: 1})
    chain.close(task_id)
    chain.score(task_id, {0: [1, 2, 3]})
    assert chain.tasks().task(task_id).phase == Phase.SCORING
    _stalled_refund(chain, task_id, 10**18)


def test_stalled_between_rounds_refunds(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=3)
    chain.run_round(task_id, *THREE)
    chain.run_round(task_id, *THREE)
    assert chain.tasks().task(task_id).phase == Phase.FINALIZED
    _stalled_refund(chain, task_id, 10**18 - 2 * 10**15)


def test_stop_reached_cannot_be_cancelled_only_finished(chain: Chain) -> None:
    for overrides in ({"max_rounds": 1}, {"max_rounds": 3, "target_accuracy": 800_000}):
        task_id = new_task(chain, **overrides)  # type: ignore[arg-type]
        chain.run_round(task_id, *THREE, accuracy=850_000)
        chain.stall(task_id)
        with reverts("TaskComplete"):
            chain.tasks(chain.outsider).cancel_task(task_id)
        chain.tasks(chain.outsider).finish_task(task_id)  # finishing needs no deadline
        assert chain.tasks().task(task_id).status == Status.FINISHED


# ---------------------------------------------------------------- (d) sybil payees

SYBILS = 5000
SYBIL_ROUNDS = 2  # the sybils split over two rounds of one edge: 2,500 records per call


def rpc_batch(chain: Chain, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """One HTTP round trip for many JSON-RPC calls (Anvil may run them concurrently; replies sorted by id)."""
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]).encode()
    request = urllib.request.Request(chain.node.url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert isinstance(answer, list), answer
    replies = sorted(answer, key=lambda r: r["id"])
    errors = [r["error"] for r in replies if "error" in r]
    assert not errors, errors[:3]
    return [r["result"] for r in replies]


def register_sybils(chain: Chain, n: int) -> list[Any]:
    """``n`` generated keys, in vehicle-index order, registered as vehicles: impersonated and funded in one batch,
    their registrations sent in one batch into the pool (automine off), then mined."""
    keys = [Account.from_key(keccak(b"sybil" + i.to_bytes(4, "big"))) for i in range(n)]
    registry = chain.registry()
    data = registry.contract.functions.registerVehicle(1, 0, 10, digest("sybil"))._encode_transaction_data()
    funding: list[tuple[str, list[Any]]] = []
    for key in keys:
        funding += [("anvil_impersonateAccount", [key.address]), ("anvil_setBalance", [key.address, hex(10**17)])]
    for start in range(0, len(funding), 1000):
        rpc_batch(chain, funding[start : start + 1000])  # a batch's calls may run concurrently: fund first, then send
    rpc_batch(chain, [("evm_setAutomine", [False])])
    try:
        tx = {"to": registry.address, "data": data, "gas": hex(200_000)}
        for start in range(0, n, 500):
            rpc_batch(chain, [("eth_sendTransaction", [tx | {"from": key.address}]) for key in keys[start : start + 500]])
        while int(rpc_batch(chain, [("txpool_status", [])])[0]["pending"], 16):
            rpc_batch(chain, [("anvil_mine", ["0x8"])])
    finally:
        rpc_batch(chain, [("evm_setAutomine", [True])])
    by_address = {key.address: key for key in keys}  # the pool mined them in its own order
    registered = {int(ev.index): by_address[ev.vehicle] for ev in registry.events("VehicleRegistered") if ev.vehicle in by_address}  # type: ignore[attr-defined]
    return [registered[i] for i in sorted(registered)]


def sybil_records(chain: Chain, task_id: int, round_: int, first: int, keys: list[Any]) -> list[TrainerRecord]:
    cid = chain.w3.eth.chain_id
    out = []
    for i, key in enumerate(keys):
        upload = digest(f"sybil{first + i}/{round_}")
        signature = sign(key, update_message(cid, task_id, round_, chain.edges[0], upload))
        out.append(TrainerRecord(vehicle=first + i, update_digest=upload, reliability=1, theta=1 + (first + i) % 7,
                                 signature=bytes.fromhex(signature[2:])))  # fmt: skip
    return out


def play_task(chain: Chain, task_id: int, sybil_rounds: list[list[TrainerRecord]] | None) -> tuple[list[int], int]:
    """Rounds where edge 0 records the sybils (or one vehicle), edges 1 and 2 one vehicle
    each, all three score; returns (recordRound gas of edge 0 per round, finishTask gas)."""
    gas = []
    for r in range(1, SYBIL_ROUNDS + 1):
        chain.start(task_id)
        if sybil_rounds is None:
            receipt = chain.record_edge(task_id, 0, [r, 3 + r, 6 + r, 9 + r - 1], {v: 3 for v in range(12)})
        else:
            receipt = chain.tasks(chain.edges[0]).record_round(task_id, r, digest("p0"), "p0", 1, sybil_rounds[r - 1])
        gas.append(receipt.gas_used)
        chain.record_edge(task_id, 1, [0], {0: 2})
        chain.record_edge(task_id, 2, [11], {11: 5})
        chain.close(task_id)
        chain.score(task_id, {0: [1, 600_000, 500_000], 1: [700_000, 1, 500_000], 2: [700_000, 600_000, 1]})
        chain.finalize(task_id)
    return gas, chain.tasks(chain.outsider).finish_task(task_id).gas_used


@pytest.mark.slow
@pytest.mark.no_cover
def test_five_thousand_sybil_payees_cannot_lock_the_escrow(chain: Chain) -> None:
    """5,000 payees, because the count is the claim: one edge's 2,500 records per
    ``recordRound`` fit under the 2^24 gas cap, ``finishTask`` costs the same as with 10
    payees, and settling them takes pages of 100 payees, each under the cap, to the wei.
    Its call runs without line coverage (``no_cover``, pytest-cov): every line it reaches is
    reached by other tests too (``test_contracts_registry``, the payout fuzz)."""
    small = new_task(chain, max_rounds=SYBIL_ROUNDS)
    _, finish_small = play_task(chain, small, None)  # 10 payees
    first = chain.registry().vehicle_count()
    keys = register_sybils(chain, SYBILS)
    assert chain.registry().vehicle_count() == first + SYBILS
    assert chain.registry().vehicle_at(first + SYBILS - 1) == keys[-1].address
    task_id = new_task(chain, escrow=10**21 + 12_345, max_rounds=SYBIL_ROUNDS, challenge_period=60)
    half = SYBILS // SYBIL_ROUNDS
    per_round = [sybil_records(chain, task_id, r + 1, first + r * half, keys[r * half : (r + 1) * half]) for r in range(SYBIL_ROUNDS)]
    record_gas, finish_gas = play_task(chain, task_id, per_round)
    print(f"\nrecordRound of {half} records: {record_gas} gas; finishTask: {finish_gas:,} (10 payees: {finish_small:,})")
    assert all(g < GAS_CAP for g in record_gas)
    assert finish_gas == finish_small  # O(edges): the payees do not enter finishTask at all

    # settlement with the client (pages of 100 payees), each transaction under the cap
    chain.after_challenges(task_id)
    theta_of: dict[tuple[int, int], int] = {}  # C_{m,ℓ} from the records in calldata
    for edge, log in edge_logs(chain.tasks(), task_id).items():
        for recorded in log.rounds:
            for packed in recorded.records:
                key = (edge, int.from_bytes(packed[:4], "big"))
                theta_of[key] = theta_of.get(key, 0) + TrainerRecord.unpack(packed).theta
    receipts = settle_task(chain.tasks(chain.outsider), task_id, page_size=100)
    settle_gas = [r.gas_used for r in receipts]
    credited = {(ev.edge, ev.vehicle): ev.amount for r in receipts for ev in r.events if ev.event == "PayoutCredited"}  # type: ignore[attr-defined]
    print(f"settle: {len(settle_gas)} pages, max {max(settle_gas):,} gas")
    assert max(settle_gas) < GAS_CAP and len([k for k in credited if k[0] == 0]) == SYBILS
    assert set(credited) == set(theta_of)
    outsider = chain.tasks(chain.outsider)

    info = chain.tasks().task(task_id)
    available = info.escrow - info.rewards_paid
    books = {e: chain.tasks().edge_book(task_id, e) for e in range(3)}
    for (edge, vehicle), amount in credited.items():  # the exact rational, floored once
        theta = theta_of[(edge, vehicle)]
        want = floor(Fraction(available * books[edge].score_sum * theta, info.score_total * books[edge].theta_total))
        assert amount == want, (edge, vehicle)
    paid = sum(credited.values())
    assert info.payouts_paid == paid and 0 <= available - paid < len(credited)  # dust: under a wei per payee
    chain.after_claim_window(task_id)
    swept = outsider.sweep(task_id).event("TaskSwept").returned  # type: ignore[attr-defined]
    assert swept == available - paid
    assert paid + swept + info.rewards_paid == 10**21 + 12_345
