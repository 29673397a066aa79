"""Outages of what the services depend on, with the services in this process (real
uvicorn) and a real Anvil that keeps its state file across restarts:

- the chain node down while the cloud's task runner starts: it retries with backoff and
  carries on from the chain's phase once Anvil is back from its state dump;
- the blob store (the Kubo fake of tests/test_blob_http.py: no Kubo binary here) down
  for a while: the edge retries it with backoff, a vehicle's trustless download through
  the edge's gateway survives a short outage by retrying 503, an upload or a close during
  a longer one is refused with 503 ``blob_store_unavailable``, writes nothing to the
  edge's state and nothing to the chain, and succeeds once the store is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3

from bmfl.blobs.codec import blob_digest
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.blobs.kubo import KuboBlobStore
from bmfl.blobs.local import LocalBlobStore
from bmfl.blobs.retry import RetryPolicy
from bmfl.protocol.schemas import EdgeInfo
from service_kit.serve import ServerThread
from chain.anvil import AnvilNode, dev_key, free_port
from chain.deploy import deploy, save_deployment
from chain.registry import RegistryClient
from cloud_aggregator.orchestrator import CloudContext, TaskRunner
from cloud_aggregator.state import CloudState
from edge_node.app import create_app
from edge_node.settings import EdgeSettings
from security_fixtures import EDGE_TABLES, tables
from service_fixtures import (
    CLOUD, FIRST_EDGE, OPERATOR, EdgeStack, ServiceChain, create_task, directory_app, mnist_task_data, serve, update_blob,
)  # fmt: skip
from test_blob_http import fake_kubo
from tooling import requires_anvil

pytestmark = requires_anvil


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceChain]:
    """Anvil with a state file (restartable), the contracts, the cloud and one edge."""
    directory = tmp_path_factory.mktemp("chain")
    node = AnvilNode(accounts=FIRST_EDGE + 1, state_path=directory / "anvil.json").start()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        accounts = w3.eth.accounts
        deployment = deploy(w3, accounts[OPERATOR], cloud=accounts[CLOUD])
        RegistryClient(w3, deployment.registry, accounts[OPERATOR]).add_edge(accounts[FIRST_EDGE])
        path = save_deployment(deployment, directory)
        yield ServiceChain(node, w3, deployment, path, [dev_key(FIRST_EDGE)])
    finally:
        node.stop()


def test_task_runner_waits_out_a_chain_outage(chain: ServiceChain, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = mnist_task_data(store)
    spec = create_task(chain, data)
    state = CloudState(tmp_path / "cloud")
    state.add_task(spec, "ready", data.initial_cid, blob_digest(data.test_set).hex0x)
    ctx = CloudContext(chain=chain.access(dev_key(CLOUD)), store=store, state=state, edges=[], round_timeout_s=1, poll_interval_s=0.1)
    chain.node.stop()  # SIGINT: Anvil dumps its state
    caplog.set_level(logging.WARNING, logger="bmfl.cloud")
    runner = TaskRunner(ctx, spec.task_id, threading.Event())
    runner.start()
    deadline = time.monotonic() + 60
    while "chain unreachable" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    chain.node.start()  # same port, state loaded from the dump
    runner.join(120)
    task = state.task(spec.task_id)
    assert task is not None and task["status"] == "failed"
    # it got past the outage: the round started on chain, then no edge had trainers
    assert task["detail"].startswith("RoundFailed: no associated vehicle"), task["detail"]
    assert ctx.chain.tasks.task(spec.task_id).round == 1


class Kubo:
    """The Kubo fake on a fixed loopback port, stopped and started at will."""

    def __init__(self) -> None:
        self.api, self.blobs = fake_kubo()
        self.port = free_port()
        self.server: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.server = ServerThread(self.api, port=self.port).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def kubo_edge(chain: ServiceChain, tmp_path: Path) -> Iterator[tuple[EdgeStack, Kubo]]:
    kubo = Kubo()
    kubo.up()
    address = Account.from_key(chain.edge_keys[0]).address
    settings = EdgeSettings(
        rpc_url=chain.rpc_url, deployment=chain.deployment_file, private_key=chain.edge_keys[0],
        blob_store=f"kubo:{kubo.url}", state_dir=tmp_path / "edge0",
    )  # fmt: skip
    server = ServerThread(create_app(settings)).start()
    directory = serve(directory_app([EdgeInfo(index=0, address=address, url=server.url, x=0.0, y=0.0)]))
    store = KuboBlobStore(kubo.url)
    stack = EdgeStack(chain, store, mnist_task_data(store), directory, [settings], [server])
    try:
        yield stack, kubo
    finally:
        stack.stop()
        kubo.down()


def test_blob_store_outage(kubo_edge: tuple[EdgeStack, Kubo]) -> None:
    stack, kubo = kubo_edge
    spec = create_task(stack.chain, stack.data, category=1)
    stack.serve_task(spec)
    first, second = stack.vehicles_at(0, 2, 1, first_row=0)
    initial, cid = stack.data.initial_model, stack.data.initial_cid
    stack.start_round(spec.task_id, initial, cid)
    stack.open_round(0, spec.task_id, 1, initial, cid)
    assert stack.upload(0, first, spec.task_id, 1, update_blob(initial, spec, 1, first)).status_code == 202
    tasks = stack.chain.access(dev_key(CLOUD)).tasks

    # a short outage: the vehicle's download through the edge's gateway retries 503 with backoff
    kubo.down()
    threading.Timer(1.0, kubo.up).start()
    gateway = GatewayClient(stack.url(0), retry=RetryPolicy(attempts=6, backoff_s=0.5))
    assert gateway.fetch(cid) == initial
    gateway.close()

    # a longer one: uploads and the close are refused with 503, nothing written anywhere
    def state() -> tuple:
        rows = tables(stack.settings[0].state_dir / "edge.sqlite3", EDGE_TABLES)
        return rows, sorted(kubo.blobs["blobs"]), sorted(kubo.blobs["pins"]), httpx.get(f"{stack.url(0)}/tasks/{spec.task_id}/rounds/1").json()

    blob = update_blob(initial, spec, 1, second, seed=1)
    kubo.down()
    before = state()
    refused = stack.upload(0, second, spec.task_id, 1, blob)
    assert (refused.status_code, refused.json()["reason"]) == (503, "blob_store_unavailable")
    assert "attempts" in refused.json()["detail"]
    assert state() == before and second.index not in before[-1]["received"]
    kubo.up()
    assert stack.upload(0, second, spec.task_id, 1, blob).status_code == 202

    kubo.down()
    closing = stack.cloud("POST", 0, f"/tasks/{spec.task_id}/rounds/1/close")
    assert (closing.status_code, closing.json()["reason"]) == (503, "blob_store_unavailable")
    assert tasks.events("RoundRecorded", taskId=spec.task_id) == []  # nothing half-recorded on chain
    kubo.up()
    closed = stack.cloud("POST", 0, f"/tasks/{spec.task_id}/rounds/1/close")
    assert closed.status_code == 200, closed.text
    assert sorted(t["vehicle"] for t in closed.json()["trainers"]) == sorted([first.index, second.index])
    assert len(tasks.events("RoundRecorded", taskId=spec.task_id)) == 1
    assert httpx.get(f"{stack.url(0)}/tasks/{spec.task_id}/rounds/1").json()["phase"] == "closed"
