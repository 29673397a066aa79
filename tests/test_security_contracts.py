"""Contract-side security on a real Anvil, beyond tests/test_contracts_*.py and
tests/test_attacks_chain.py:

- every restricted function called from every other role reverts with its error, a
  removed edge and a replaced cloud lose their rights (and recording no longer waits for
  a removed edge), ownership moves in two steps;
- front-running: a copied ``registerVehicle`` or ``createTask`` mined first gains the
  copier nothing (identities are ``msg.sender``, ids come from one's own receipt);
- settlement cannot be gamed: a payee settled twice is paid once, top-ups floor once on
  the total, forged proofs, other vehicles' records, unsorted entries and fake logs revert;
- payout maths at the extremes (escrow at ``uint96`` max, θ at ``uint64`` max, one wei)
  equals the references to the wei and sums to the escrow; an escrow above ``uint96``
  and a θ sum above ``uint64`` revert instead of wrapping.
"""

from __future__ import annotations

from fractions import Fraction
from math import floor
from typing import Any, Callable

import pytest
from hexbytes import HexBytes

from chain.registry import RegistryClient
from chain.records import TrainerRecord, record_proofs
from chain.settlement import edge_logs
from chain.tasks import PayeeClaim, Phase, TasksClient
from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401
from payout_fuzz import check_against_reference

UINT96_MAX, UINT64_MAX = 2**96 - 1, 2**64 - 1


def new_task(chain: Chain, escrow: int = 10**18, **params: Any) -> int:
    task_id, _ = chain.tasks(chain.publisher).create_task(chain.params(**params), escrow)
    return task_id


def roles(chain: Chain) -> dict[str, str]:
    """Every kind of account; edge 4 is removed from the registry first."""
    chain.registry(chain.operator).remove_edge(chain.edges[4])
    return {
        "operator": chain.operator, "cloud": chain.cloud, "publisher": chain.publisher, "edge": chain.edges[0],
        "removed edge": chain.edges[4], "vehicle": chain.vehicles[0], "outsider": chain.outsider,
    }  # fmt: skip


def calls(chain: Chain, task_id: int) -> dict[str, tuple[set[str], str, Callable[[TasksClient, RegistryClient], Any]]]:
    """Restricted function → (roles allowed, error of the others, the call), in round 1's training."""
    return {
        "addEdge": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.add_edge(chain.outsider)),
        "removeEdge": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.remove_edge(chain.edges[1])),
        "setCloud": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.set_cloud(chain.outsider)),
        "transferOwnership": ({"operator"}, "OwnableUnauthorizedAccount",
                              lambda t, r: r.send(r.contract.functions.transferOwnership(chain.outsider))),
        "renounceOwnership": ({"operator"}, "OwnableUnauthorizedAccount",
                              lambda t, r: r.send(r.contract.functions.renounceOwnership())),
        "startRound": ({"cloud"}, "NotCloud", lambda t, r: t.start_round(task_id, digest("g"), "g")),
        "closeRecording": ({"cloud"}, "NotCloud", lambda t, r: t.close_recording(task_id)),
        "finalizeRound": ({"cloud"}, "NotCloud", lambda t, r: t.finalize_round(task_id, digest("g"), "g", 1)),
        "recordRound": ({"edge"}, "NotEdge", lambda t, r: t.record_round(task_id, 1, digest("p"), "p", 1, [])),
        "deregisterVehicle": ({"vehicle"}, "NotRegistered", lambda t, r: r.deregister_vehicle()),
    }  # fmt: skip


def test_every_restricted_function_refuses_every_other_role(chain: Chain) -> None:
    who = roles(chain)
    task_id = new_task(chain)
    chain.start(task_id)
    refused = 0
    table = calls(chain, task_id)
    for name, (allowed, error, call) in table.items():
        for role, account in who.items():
            if role in allowed:
                continue
            with reverts(error):
                call(chain.tasks(account), chain.registry(account))
            refused += 1
    assert refused == sum(len(who) - len(allowed) for allowed, _, _ in table.values()) == 10 * 6
    # the vehicle was not deregistered by anyone else, the round is untouched
    info = chain.tasks().task(task_id)
    assert chain.registry().is_active_vehicle(0) and (info.phase, info.recorded_edges) == (Phase.TRAINING, 0)
    # scores: in the scoring phase, only an edge that recorded
    for e in range(4):
        chain.record_edge(task_id, e, [e], {e: 1})
    chain.close(task_id)
    for role, account in who.items():
        if role != "edge":
            with reverts("NotEdge"):
                chain.tasks(account).submit_scores(task_id, [1, 1, 1, 1])


def test_replaced_cloud_and_removed_edge_lose_their_rights(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.registry(chain.operator).set_cloud(chain.outsider)
    with reverts("NotCloud"):
        chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    chain.tasks(chain.outsider).start_round(task_id, digest("g"), "g")
    chain.registry(chain.operator).remove_edge(chain.edges[2])
    with reverts("NotEdge"):
        chain.tasks(chain.edges[2]).record_round(task_id, 1, digest("p"), "p", 1, [])
    for e in (0, 1, 3, 4):
        chain.record_edge(task_id, e, [e], {e: 1})
    closed = chain.tasks(chain.outsider).close_recording(task_id).event("RecordingClosed")  # the new cloud, early
    assert (closed.recordedEdges, closed.absentEdges) == (0b11011, 0)  # type: ignore[attr-defined]


def test_ownership_moves_only_in_two_steps(chain: Chain) -> None:
    registry = chain.registry(chain.operator)
    registry.send(registry.contract.functions.transferOwnership(chain.outsider))
    assert registry.owner() == chain.operator  # pending until accepted
    with reverts("OwnableUnauthorizedAccount"):
        chain.registry(chain.publisher).send(registry.contract.functions.acceptOwnership())
    chain.registry(chain.outsider).send(registry.contract.functions.acceptOwnership())
    assert registry.owner() == chain.outsider
    with reverts("OwnableUnauthorizedAccount"):
        registry.add_edge(chain.publisher)


def mine_together(chain: Chain, *sends: Callable[[], HexBytes]) -> list[Any]:
    """Send the transactions into one block, in this order (the first pays the most gas)."""
    w3 = chain.w3
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        hashes = [send() for send in sends]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1 and all(r["status"] == 1 for r in receipts)
    return sorted(receipts, key=lambda r: r["transactionIndex"])


def test_front_running_a_registration_gains_nothing(chain: Chain) -> None:
    victim, copier = chain.outsider, chain.publisher
    registry = chain.registry()
    profile = digest("victim's profile")
    fn = registry.contract.functions.registerVehicle(5, 1, 900, profile)
    gas = chain.w3.eth.gas_price
    first, second = mine_together(
        chain,
        lambda: fn.transact({"from": copier, "gasPrice": 10 * gas}),  # the copy, paying more, is mined first
        lambda: fn.transact({"from": victim, "gasPrice": gas}),
    )
    assert first["from"] == copier and second["from"] == victim
    copied, own = registry.vehicle_index(copier), registry.vehicle_index(victim)
    assert copied != own
    assert registry.vehicle_at(own) == victim and registry.vehicle(own).account == victim
    assert registry.vehicle(copied).account == copier  # the copier only registered itself


def test_front_running_task_creation_gains_nothing(chain: Chain) -> None:
    tasks = chain.tasks()
    params = chain.params().as_tuple()
    fn = tasks.contract.functions.createTask(params)
    gas = chain.w3.eth.gas_price
    first, second = mine_together(
        chain,
        lambda: fn.transact({"from": chain.outsider, "value": 10**18, "gasPrice": 10 * gas}),
        lambda: fn.transact({"from": chain.publisher, "value": 10**18, "gasPrice": gas}),
    )
    ids = [tasks.receipt(r).event("TaskCreated").taskId for r in (first, second)]  # type: ignore[attr-defined]
    assert ids[0] != ids[1]
    assert tasks.task(ids[1]).publisher == chain.publisher and tasks.task(ids[1]).escrow == 10**18
    assert tasks.task(ids[0]).publisher == chain.outsider  # the copier escrowed its own money


def whale(chain: Chain) -> None:
    chain.w3.provider.make_request("anvil_setBalance", [chain.publisher, hex(2**100)])  # type: ignore[arg-type]


def test_escrow_above_uint96_is_refused(chain: Chain) -> None:
    whale(chain)
    with reverts("InvalidTask"):
        new_task(chain, escrow=UINT96_MAX + 1, block_reward=0)
    with reverts("InsufficientEscrow"):  # 65,535 rounds × uint96-max block reward, computed without overflow
        new_task(chain, escrow=UINT96_MAX, block_reward=UINT96_MAX, max_rounds=2**16 - 1)
    task_id = new_task(chain, escrow=UINT96_MAX, block_reward=UINT96_MAX, max_rounds=1)
    assert chain.tasks().task(task_id).escrow == UINT96_MAX


Q3 = {0: [1, 1_000_000, 1_000_000], 1: [1_000_000, 1, 1_000_000], 2: [1_000_000, 1_000_000, 1]}
EXTREMES = {
    "uint96 escrow, uint64 thetas": {
        "escrow": UINT96_MAX, "block_reward": 0,
        "rounds": [{"at": {0: [0, 1], 1: [2], 2: [3]}, "thetas": {0: UINT64_MAX - 1, 1: 1, 2: UINT64_MAX, 3: UINT64_MAX},
                    "scores": Q3}],
    },
    "half the escrow as block rewards": {
        "escrow": UINT96_MAX, "block_reward": UINT96_MAX // 2,
        "rounds": [  # each lane ends at exactly uint64 max
            {"at": {0: [0], 1: [1], 2: [2]}, "thetas": {0: UINT64_MAX, 1: 1, 2: 0},
             "scores": {0: [1, 999_999, 1], 1: [1, 1, 1_000_000], 2: [999_999, 1, 1]}},
            {"at": {0: [3], 1: [1], 2: [2]}, "thetas": {3: 0, 1: UINT64_MAX - 1, 2: -1}, "scores": Q3},
        ],
    },
    "dust: one wei": {
        "escrow": 1, "block_reward": 0,
        "rounds": [{"at": {0: [0, 1], 1: [2], 2: [3]}, "thetas": {0: UINT64_MAX - 1, 1: 1, 2: 1, 3: 1}, "scores": Q3}],
    },
    "θ of 1 beside θ of 2^64 - 1": {
        "escrow": 10**21, "block_reward": 10**15,
        "rounds": [{"at": {0: [0, 1, 2], 3: [3], 4: [4]}, "thetas": {0: UINT64_MAX - 1, 1: 1, 2: -1, 3: UINT64_MAX, 4: 0},
                    "scores": {0: [1, 0, 0, 800_000, 7], 3: [900_000, 0, 0, 1, 7], 4: [900_000, 0, 0, 800_000, 1]}}],
    },
}  # fmt: skip


@pytest.mark.parametrize("case", list(EXTREMES), ids=list(EXTREMES))
def test_payouts_at_extreme_values_equal_the_reference(chain: Chain, case: str) -> None:
    whale(chain)
    check_against_reference(chain, EXTREMES[case])


def test_contribution_overflow_reverts_instead_of_wrapping(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=2)
    chain.run_round(task_id, {0: [0]}, {0: UINT64_MAX}, {})
    r = chain.start(task_id)
    with reverts("Panic") as info:
        chain.record_edge(task_id, 0, [0], {0: 1})
    assert info.value.args_by_name["code"] == 0x11  # arithmetic overflow, checked
    assert chain.tasks().edge_book(task_id, 0).theta_total == UINT64_MAX
    with reverts("Panic"):  # within one call, too
        chain.tasks(chain.edges[1]).record_round(task_id, r, digest("p"), "p", 1, chain.records(task_id, r, 1, [1, 2], {1: UINT64_MAX, 2: 1}))


def settled_task(chain: Chain) -> int:
    """A finished task past its challenge period: vehicle 0 recorded at edge 0 in both rounds
    (θ 1 then 2, of C = 3 + 4 for vehicle 1), edges 1 and 2 one vehicle each; 3 scorers."""
    task_id = new_task(chain, escrow=10**18 + 1, max_rounds=2, challenge_period=10)
    scores = {0: [1, 500_000, 500_000], 1: [700_000, 1, 500_000], 2: [700_000, 500_000, 1]}
    chain.run_round(task_id, {0: [0, 1], 1: [2], 2: [3]}, {0: 1, 1: 3, 2: 1, 3: 1}, scores)
    chain.run_round(task_id, {0: [0, 1], 1: [2], 2: [3]}, {0: 2, 1: 4, 2: 1, 3: 1}, scores)
    chain.tasks(chain.outsider).finish_task(task_id)
    return task_id


def claim_of(chain: Chain, task_id: int, edge: int, vehicle: int, rounds: tuple[int, ...] = (1, 2)) -> PayeeClaim:
    log = edge_logs(chain.tasks(), task_id)[edge]
    records = []
    for index, recorded in enumerate(log.rounds):
        for position, packed in enumerate(recorded.records):
            if recorded.round in rounds and TrainerRecord.unpack(packed).vehicle == vehicle:
                records.append((index, position, packed, record_proofs(recorded.records)[position]))
    return PayeeClaim(vehicle=vehicle, records=records)


def test_settling_twice_pays_once_and_top_ups_floor_once(chain: Chain) -> None:
    task_id = settled_task(chain)
    outsider = chain.tasks(chain.outsider)
    log = edge_logs(chain.tasks(), task_id)[0].entries
    with reverts("SettlementClosed"):
        outsider.settle(task_id, 0, log, [claim_of(chain, task_id, 0, 0)])
    chain.after_challenges(task_id)
    with reverts("ChallengesClosed"):
        outsider.challenge_record(task_id, 0, log, 0, 0, *claim_of(chain, task_id, 0, 0).records[0][2:])
    first = outsider.settle(task_id, 0, log, [claim_of(chain, task_id, 0, 0, rounds=(1,))]).event("PayoutCredited")
    top_up = outsider.settle(task_id, 0, log, [claim_of(chain, task_id, 0, 0)]).event("PayoutCredited")  # round 2 added
    again = outsider.settle(task_id, 0, log, [claim_of(chain, task_id, 0, 0)])
    assert again.events == []  # nothing left to settle for this payee
    info = outsider.task(task_id)
    available, s0 = info.escrow - info.rewards_paid, outsider.edge_book(task_id, 0).score_sum
    assert first.amount == floor(Fraction(available * s0 * 1, info.score_total * 10))  # type: ignore[attr-defined]
    assert first.amount + top_up.amount == floor(Fraction(available * s0 * 3, info.score_total * 10))  # type: ignore[attr-defined]
    assert outsider.settled_theta(task_id, 0, 0) == 3
    assert outsider.owed(chain.vehicles[0]) == first.amount + top_up.amount == outsider.task(task_id).payouts_paid  # type: ignore[attr-defined]


def test_forged_settlement_claims_revert(chain: Chain) -> None:
    task_id = settled_task(chain)
    chain.after_challenges(task_id)
    outsider = chain.tasks(chain.outsider)
    log = edge_logs(chain.tasks(), task_id)[0].entries
    own = claim_of(chain, task_id, 0, 0)
    other = claim_of(chain, task_id, 0, 1)
    with reverts("WrongVehicle"):  # vehicle 0 claiming vehicle 1's record
        outsider.settle(task_id, 0, log, [PayeeClaim(vehicle=0, records=other.records)])
    index, position, packed, proof = own.records[0]
    inflated = bytearray(packed)
    inflated[51] = 200  # θ raised in the presented record
    with reverts("BadProof"):
        outsider.settle(task_id, 0, log, [PayeeClaim(vehicle=0, records=[(index, position, bytes(inflated), proof)])])
    with reverts("EntriesUnsorted"):
        outsider.settle(task_id, 0, log, [PayeeClaim(vehicle=0, records=own.records[::-1])])
    with reverts("EntriesUnsorted"):  # the same record twice
        outsider.settle(task_id, 0, log, [PayeeClaim(vehicle=0, records=own.records[:1] * 2)])
    fake = [entry.model_copy(update={"theta_total": 1}) for entry in log]
    with reverts("LogMismatch"):
        outsider.settle(task_id, 0, fake, [own])
    with reverts("LogMismatch"):  # another edge's log
        outsider.settle(task_id, 1, log, [own])
    assert outsider.task(task_id).payouts_paid == 0
