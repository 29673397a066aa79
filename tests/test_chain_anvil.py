"""The Anvil launcher and deployment files: a restart from the dumped state keeps
contracts, tasks and balances."""

from __future__ import annotations

from pathlib import Path

from web3 import Web3

from chain.anvil import AnvilNode, free_port, rpc
from chain.deploy import deploy, is_deployed, load_deployment, save_deployment
from chain.tasks import Status, TaskParams, TasksClient
from chain_fixtures import digest, requires_anvil


@requires_anvil
def test_restart_from_dumped_state_keeps_tasks_and_balances(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with AnvilNode(state_path=state) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        operator, publisher = w3.eth.accounts[:2]
        dep = deploy(w3, operator, cloud=operator)
        save_deployment(dep, tmp_path / "deployments")
        params = TaskParams(
            block_reward=1, category=1, max_rounds=1,
            initial_model_digest=digest("w0"), test_set_digest=digest("t"),
        )  # fmt: skip
        task_id, _ = TasksClient(w3, dep.tasks, publisher).create_task(params, 12345)
        balance = w3.eth.get_balance(publisher)
    assert state.is_file() and not node.running
    with AnvilNode(state_path=state) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        dep2 = load_deployment(w3.eth.chain_id, tmp_path / "deployments")
        assert dep2 == dep and is_deployed(w3, dep2)
        tasks = TasksClient(w3, dep2.tasks)
        assert tasks.task_count() == 1
        info = tasks.task(task_id)
        assert (info.status, info.escrow, info.publisher) == (Status.ACTIVE, 12345, publisher)
        assert w3.eth.get_balance(dep2.tasks) == 12345
        assert w3.eth.get_balance(publisher) == balance


@requires_anvil
def test_launcher_port_and_stop() -> None:
    port = free_port()
    node = AnvilNode(port=port, chain_id=4242).start()
    try:
        assert node.url.endswith(str(port)) and rpc(node.url, "eth_chainId") == hex(4242)
    finally:
        node.stop()
    assert not node.running
    node.stop()  # idempotent
