"""``edge_node.chain_view`` on Anvil, read as an attacker would hope it fails: a value
it remembers never outlives the chain state it was read from. A deregistration, a round
leaving training, a gap of several blocks or a chain going back are all seen at the next
head; a block with no log of the contracts keeps what was read; a head read always
starts after the call (it sees every transaction mined before)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from eth_account import Account

from chain.tasks import Phase
from chain_fixtures import Chain, chain, chain_module  # noqa: F401
from edge_node.chain_view import ChainView
from service_kit.chain_access import ChainAccess


def view_of(chain: Chain) -> ChainView:
    access = ChainAccess(chain.w3, Account.create(), chain.deployment, chain.registry(), chain.tasks())
    return ChainView(access)


def rpc(chain: Chain, method: str, *params: object) -> object:
    return chain.w3.provider.make_request(method, list(params))["result"]  # type: ignore[arg-type]


def test_registration_follows_the_chain_at_each_head(chain: Chain) -> None:
    view = view_of(chain)
    snapshot = rpc(chain, "evm_snapshot")
    first = view.head()
    assert view.is_active_vehicle(0) and view.is_active_vehicle(1)
    assert (view.vehicle(0).samples, view.vehicle(1).samples) == (100, 101)
    transfer = chain.w3.eth.send_transaction({"from": chain.operator, "to": chain.outsider, "value": 1})
    chain.w3.eth.wait_for_transaction_receipt(transfer)  # a block with no contract log
    assert view.head().number == first.number + 1
    assert view.is_active_vehicle(0)
    chain.registry(chain.vehicles[0]).deregister_vehicle()  # the next block, with the registry's log
    assert view.head().number == first.number + 2
    assert not view.is_active_vehicle(0) and view.is_active_vehicle(1)
    assert not view.vehicle(0).active and view.vehicle(1).active
    chain.registry(chain.vehicles[0]).register_vehicle(1, 0, 250, b"\x01" * 32)  # back with another size
    rpc(chain, "evm_mine")
    rpc(chain, "evm_mine")  # a gap of three blocks since the last head read: everything re-read
    assert view.head().number == first.number + 5
    assert view.is_active_vehicle(0) and view.vehicle(0).samples == 250 and view.vehicle(0).active
    chain.registry(chain.vehicles[1]).deregister_vehicle()
    assert view.head() and not view.is_active_vehicle(1) and not view.vehicle(1).active
    rpc(chain, "evm_revert", snapshot)  # the chain goes back to before all of it
    assert view.head().number == first.number
    assert view.is_active_vehicle(0) and view.is_active_vehicle(1)
    assert (view.vehicle(0).samples, view.vehicle(1).active) == (100, True)


def test_round_state_and_chain_time_follow_the_chain(chain: Chain) -> None:
    view = view_of(chain)
    task_id, _ = chain.tasks(chain.publisher).create_task(chain.params(round_duration=600), 10**18)
    chain.start(task_id)
    head = view.head()
    opened = view.task(task_id)
    assert (opened.phase, opened.round) == (Phase.TRAINING, 1) and head.timestamp <= opened.deadline
    chain.record_edge(task_id, 0, [0], {0: 5})  # a log of the tasks contract: re-read
    view.head()
    recorded = view.task(task_id)
    assert recorded.recorded_edges == 1 and recorded.phase == Phase.TRAINING
    chain.mine_after(601)  # a block with no log: the task is remembered, chain time moves on
    head = view.head()
    assert view.task(task_id) == recorded and head.timestamp > recorded.deadline
    chain.tasks(chain.outsider).close_recording(task_id)  # anyone may, past the deadline
    view.head()
    assert view.task(task_id).phase == Phase.SCORING


def test_each_head_read_starts_after_the_call(chain: Chain) -> None:
    view = view_of(chain)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            rpc(chain, "evm_mine")
            mined = chain.w3.eth.block_number
            assert all(h.number >= mined for h in pool.map(lambda _: view.head(), range(16)))
