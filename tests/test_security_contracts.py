"""Contract-side security on a real Anvil, beyond tests/test_contracts_*.py (which cover
the happy paths, the operator-only edge calls, cloud-only start/finalize, edge-only
commit/record, double claim and reentrancy on claim):

- every restricted function called from every other role reverts with its error, a
  removed edge and a replaced cloud lose their rights, ownership moves in two steps;
- front-running: a copied ``registerVehicle`` or ``createTask`` mined first gains the
  copier nothing (identities are ``msg.sender``, ids come from one's own receipt);
- payout maths at the extremes (escrow at ``uint96`` max, θ at ``uint64`` max, one wei)
  equals the integer reference ``bmfl.incentives`` to the wei and sums to the escrow;
  an escrow above ``uint96`` and a θ sum above ``uint64`` revert instead of wrapping.
"""

from __future__ import annotations

from typing import Any, Callable

from hexbytes import HexBytes

from chain.registry import RegistryClient
from chain.tasks import TasksClient
from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401

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
    """Restricted function → (roles allowed, error of the others, the call)."""
    record = [chain.record(task_id, 1, 0, 1, 5)]
    return {
        "addEdge": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.add_edge(chain.outsider)),
        "removeEdge": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.remove_edge(chain.edges[1])),
        "setCloud": ({"operator"}, "OwnableUnauthorizedAccount", lambda t, r: r.set_cloud(chain.outsider)),
        "transferOwnership": ({"operator"}, "OwnableUnauthorizedAccount",
                              lambda t, r: r.send(r.contract.functions.transferOwnership(chain.outsider))),
        "renounceOwnership": ({"operator"}, "OwnableUnauthorizedAccount",
                              lambda t, r: r.send(r.contract.functions.renounceOwnership())),
        "startRound": ({"cloud"}, "NotCloud", lambda t, r: t.start_round(task_id, digest("g"), "g")),
        "finalizeRound": ({"cloud"}, "NotCloud", lambda t, r: t.finalize_round(task_id, digest("g"), "g", 1)),
        "recordRound": ({"edge"}, "NotEdge", lambda t, r: t.record_round(task_id, 1, digest("p"), "p", 1, record)),
        "deregisterVehicle": ({"vehicle"}, "NotRegistered", lambda t, r: r.deregister_vehicle()),
    }  # fmt: skip


def test_every_restricted_function_refuses_every_other_role(chain: Chain) -> None:
    who = roles(chain)
    task_id = new_task(chain)
    chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    refused = 0
    for name, (allowed, error, call) in calls(chain, task_id).items():
        for role, account in who.items():
            if role in allowed:
                continue
            with reverts(error):
                call(chain.tasks(account), chain.registry(account))
            refused += 1
    assert refused == 9 * 7 - 9  # submitScores: only in scoring (test_attacks_chain), then edges only
    # the vehicle was not deregistered by anyone else, the round is untouched
    assert chain.registry().is_active_vehicle(0) and chain.tasks().task(task_id).recorded_edges == 0


def test_replaced_cloud_and_removed_edge_lose_their_rights(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.registry(chain.operator).set_cloud(chain.outsider)
    with reverts("NotCloud"):
        chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    chain.tasks(chain.outsider).start_round(task_id, digest("g"), "g")
    edge = chain.tasks(chain.edges[2])
    chain.registry(chain.operator).remove_edge(chain.edges[2])
    with reverts("NotEdge"):
        edge.record_round(task_id, 1, digest("p"), "p", 1, [chain.record(task_id, 1, 2, 2, 1)])
    assert not chain.registry().active_edge_mask() & (1 << 2)  # recording can close without it


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


def test_contribution_overflow_reverts_instead_of_wrapping(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=2)
    chain.run_round(task_id, {0: [0]}, {0: UINT64_MAX}, {0: [500_000]})
    tasks = chain.tasks()
    tasks.as_sender(chain.cloud).start_round(task_id, digest("g"), "g")
    edge = tasks.as_sender(chain.edges[0])
    with reverts("Panic") as info:
        edge.record_round(task_id, 2, digest("p"), "p", 1, [chain.record(task_id, 2, 0, 0, 1)])
    assert info.value.args_by_name["code"] == 0x11  # arithmetic overflow, checked
    assert tasks.edge_book(task_id, 0).theta_total == UINT64_MAX
