"""Faults in a whole stack of real processes (launcher.stack: Anvil with its state
file, 2 edges and the cloud as uvicorn processes), one 2-round task, vehicles driven
over HTTP from here. In this order, sharing the task:

1. round 1: edge 0 is killed with SIGKILL while uploads reach it and restarted; every
   update it had acknowledged is still there, the rest are retried until 202 (an update
   stored before whose reply was lost gets its receipt again), and the chain records
   all of them once;
2. between the rounds the cloud is killed with SIGKILL and restarted (with a 25 s round
   timeout): it resumes the task from the chain's phase;
3. round 2: Anvil is stopped and restarted from its state dump while the round is open
   (an upload meanwhile gets 503 ``chain_unavailable`` and changes nothing; the chain
   comes back with every block, task and trainer bit), and one selected vehicle never
   uploads: the round closes at the timeout without it and the task finishes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from eth_account import Account
from web3 import Web3

from bmfl.blobs.codec import blob_digest
from bmfl.blobs.local import LocalBlobStore
from bmfl.data import load_dataset
from bmfl.protocol.schemas import TaskDraft, TaskSpec, TrainingSpec
from service_kit.chain_access import connect
from launcher.stack import FIRST_EDGE, PUBLISHER, LocalStack
from chain.anvil import AnvilNode, dev_key
from chain.deploy import Deployment
from chain.tasks import Phase, Status, TasksClient
from cloud_aggregator.orchestrator import SETTLED
from launcher.publisher import Publisher
from security_fixtures import edge_state
from service_fixtures import ServiceChain, Vehicle, association_request, register_vehicle, update_blob, update_form
from tooling import requires_anvil

pytestmark = [pytest.mark.slow, requires_anvil]
T = TypeVar("T")
TIMEOUT_AFTER_RESTART_S = 25


def wait(what: str, probe: Callable[[], T | None], timeout: float = 180.0) -> T:
    """Poll ``probe`` until it returns something truthy (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"gave up waiting for {what}")


@dataclass
class Task:
    stack: LocalStack
    chain: ServiceChain
    spec: TaskSpec
    at: list[list[Vehicle]]  # vehicles per edge
    store: LocalBlobStore

    @property
    def tasks(self) -> TasksClient:
        return TasksClient(self.chain.w3, self.chain.deployment.tasks)

    @property
    def vehicles(self) -> list[Vehicle]:
        return [v for edge in self.at for v in edge]

    def edge_of(self, vehicle: Vehicle) -> int:
        return next(e for e, vs in enumerate(self.at) if vehicle in vs)

    def url(self, edge: int) -> str:
        return self.stack.edge_services[edge].url

    def address(self, edge: int) -> str:
        return Account.from_key(self.chain.edge_keys[edge]).address

    def global_blob(self, round_: int) -> bytes:
        """w^{round-1}, once every edge has opened ``round_``."""

        def opened() -> str | None:
            vehicle = self.at[0][0]
            a = httpx.get(f"{self.url(0)}/tasks/{self.spec.task_id}/assignment", params={"vehicle": vehicle.address}).json()
            return a["global_cid"] if a.get("round") == round_ and a.get("open") else None

        cid = wait(f"round {round_} open", opened)
        for edge in range(len(self.at)):
            wait(f"round {round_} at edge {edge}", lambda: self.progress(edge, round_).get("phase") == "open")
        return self.store.get(cid)

    def progress(self, edge: int, round_: int) -> dict[str, Any]:
        return httpx.get(f"{self.url(edge)}/tasks/{self.spec.task_id}/rounds/{round_}").json()

    def upload(self, vehicle: Vehicle, round_: int, blob: bytes) -> httpx.Response:
        edge = self.edge_of(vehicle)
        data, files = update_form(vehicle.account, self.chain.chain_id, self.spec.task_id, round_, self.address(edge), blob)
        return httpx.post(f"{self.url(edge)}/tasks/{self.spec.task_id}/rounds/{round_}/updates", data=data, files=files, timeout=60)

    def upload_until_stored(self, vehicle: Vehicle, round_: int, blob: bytes) -> int:
        """Retry through restarts and outages until 202 (an update stored before whose reply
        was lost is answered with its receipt)."""

        def attempt() -> int | None:
            reply = self.upload(vehicle, round_, blob)
            if reply.status_code == 202:
                return reply.status_code
            assert reply.status_code == 503, reply.text  # only an outage is worth a retry
            return None

        return wait(f"vehicle {vehicle.index}'s upload", attempt)

    def recorded(self, round_: int) -> dict[int, str]:
        """Vehicle → update digest, from every edge's ``RoundRecorded`` of the round."""
        recorded = self.tasks.recorded_rounds(self.spec.task_id, self.chain.deployment.block_number, round=round_)
        records = [r for rr in recorded for r in rr.decoded()]
        out = {r.vehicle: "0x" + r.update_digest.hex() for r in records}
        assert len(out) == len(records), "a vehicle recorded twice"
        return out

    def edge_states(self) -> list[tuple]:
        return [edge_state(self.stack.run_dir / f"edge-{i}", self.store.root) for i in range(len(self.at))]

    def cloud_view(self) -> dict[str, Any]:
        return httpx.get(f"{self.stack.cloud.url}/tasks/{self.spec.task_id}").json()


def chain_view(stack: LocalStack) -> ServiceChain:
    """The stack's chain as the service test helpers see it (the node is the stack's)."""
    w3 = Web3(Web3.HTTPProvider(stack.rpc_url))
    assert stack.deployment_file is not None
    deployment = Deployment.model_validate_json(stack.deployment_file.read_text())
    url = urlsplit(stack.rpc_url)
    node = AnvilNode(host=str(url.hostname), port=url.port)  # not started here: only its URL is used
    keys = [dev_key(FIRST_EDGE + i) for i in range(stack.edges)]
    return ServiceChain(node, w3, deployment, stack.deployment_file, keys)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Task]:
    with LocalStack(tmp_path_factory.mktemp("stack"), edges=2, round_timeout_s=120) as stack:
        chain = chain_view(stack)
        train, test = load_dataset("mnist")
        at: list[list[Vehicle]] = [[], []]
        for i, edge in enumerate([0] * 6 + [1] * 2):
            vehicle = register_vehicle(chain, train.subset(list(range(64 * i, 64 * (i + 1)))))
            address = Account.from_key(chain.edge_keys[edge]).address
            body = association_request(vehicle.account, chain.chain_id, address)
            assert httpx.post(stack.edge_services[edge].url + "/associate", json=body).status_code == 200
            at[edge].append(vehicle)
        publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
        draft = TaskDraft(rounds=2, reward_wei=10**18, block_reward_wei=10**15, training=TrainingSpec(epochs=1, batch_size=32, dp=False))
        view = publisher.publish(draft, test.subset(list(range(200))))
        yield Task(stack, chain, TaskSpec.model_validate(view["spec"]), at, LocalBlobStore(stack.blob_store))


def test_edge_killed_mid_round_keeps_every_acknowledged_update(task: Task) -> None:
    initial = task.global_blob(1)
    blobs = {v.index: update_blob(initial, task.spec, 1, v, seed=v.index) for v in task.vehicles}
    first, rest = task.at[0][:3], task.at[0][3:]
    acked = {}
    for vehicle in first:
        reply = task.upload(vehicle, 1, blobs[vehicle.index])
        assert reply.status_code == 202, reply.text
        acked[vehicle.index] = reply.json()["digest"]

    def try_upload(vehicle: Vehicle) -> httpx.Response | None:
        try:
            return task.upload(vehicle, 1, blobs[vehicle.index])
        except httpx.TransportError:
            return None

    edge0 = task.stack.edge_services[0]
    with ThreadPoolExecutor(len(rest)) as pool:
        inflight = [pool.submit(try_upload, v) for v in rest]
        time.sleep(0.05)
        assert edge0.pid is not None
        os.kill(edge0.pid, signal.SIGKILL)  # the edge's only process
        replies = [f.result() for f in inflight]
    acked |= {v.index: r.json()["digest"] for v, r in zip(rest, replies) if r is not None and r.status_code == 202}
    edge0.restart()

    assert set(acked) <= set(task.progress(0, 1)["received"])
    statuses = [task.upload_until_stored(v, 1, blobs[v.index]) for v in rest if v.index not in acked]
    assert statuses == [202] * len(statuses)
    for vehicle in task.at[1]:
        assert task.upload(vehicle, 1, blobs[vehicle.index]).status_code == 202

    wait("round 1 recorded by both edges", lambda: len({*task.recorded(1)}) == len(task.vehicles))
    recorded = task.recorded(1)
    assert recorded == {v: blob_digest(b).hex0x for v, b in blobs.items()}
    assert all(recorded[v] == digest for v, digest in acked.items())


def test_cloud_killed_between_rounds_resumes_the_task(task: Task) -> None:
    wait("round 1 saved by the cloud", lambda: task.cloud_view().get("rounds_finished") == 1)
    cloud = task.stack.cloud
    assert cloud.pid is not None
    os.kill(cloud.pid, signal.SIGKILL)
    cloud.env["BMFL_CLOUD_ROUND_TIMEOUT_S"] = str(TIMEOUT_AFTER_RESTART_S)
    cloud.restart()
    view = task.cloud_view()
    assert (view["rounds_finished"], view["status"]) == (1, "running")
    task.global_blob(2)  # round 2 opened at both edges by the restarted cloud
    assert task.tasks.task(task.spec.task_id).round == 2


def test_chain_restart_and_a_vehicle_that_never_uploads(task: Task) -> None:
    start = task.global_blob(2)
    absent = task.at[0][0]
    present = [v for v in task.vehicles if v is not absent]
    blobs = {v.index: update_blob(start, task.spec, 2, v, seed=v.index) for v in present}
    for vehicle in present[:2]:
        assert task.upload(vehicle, 2, blobs[vehicle.index]).status_code == 202

    info, block = task.tasks.task(task.spec.task_id), task.chain.w3.eth.block_number
    anvil = task.stack.services["chain"]
    assert anvil.stop(), "Anvil must stop on SIGINT, dumping its state"
    before = task.edge_states()
    outage = task.upload(present[2], 2, blobs[present[2].index])
    assert (outage.status_code, outage.json()["reason"]) == (503, "chain_unavailable")
    assert task.edge_states() == before
    anvil.start()
    anvil.wait_healthy()
    assert task.chain.w3.eth.block_number >= block
    assert task.tasks.task(task.spec.task_id) == info

    for vehicle in present[2:]:
        assert task.upload_until_stored(vehicle, 2, blobs[vehicle.index]) == 202
    done = wait("the task to finish", lambda: task.cloud_view().get("status") == "finished" and task.cloud_view())
    assert done["rounds_finished"] == 2, done["detail"]
    assert task.recorded(2) == {v: blob_digest(b).hex0x for v, b in blobs.items()}
    assert absent.index not in task.recorded(2)
    assert task.tasks.task(task.spec.task_id).status == Status.FINISHED
    assert task.tasks.task(task.spec.task_id).phase == Phase.FINALIZED
    # two edges never reach consensus: the escrow went back at the finish, and the cloud says there is nothing left
    assert task.tasks.task(task.spec.task_id).swept
    wait("the cloud to report the task settled", lambda: task.cloud_view().get("detail") == SETTLED)
