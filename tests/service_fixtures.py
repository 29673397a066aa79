"""Shared helpers for the service tests (edge, cloud, vehicles, end to end).

A real Anvil with the contracts deployed and the deployment file saved; Anvil dev
accounts for the operator (0), the cloud (1), the publisher (2) and the edges (3, 4, …),
with their private keys (:func:`chain.anvil.dev_key`); vehicles with fresh keys, funded
and registered; a small MNIST test set and initial model as blobs; tasks created from
the publisher's account; signed service requests and vehicle messages; update blobs
trained (or poisoned) with the core; edge servers as real uvicorn servers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from bmfl.attacks import Attack, AttackContext, local_upload
from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.blobs.local import LocalBlobStore
from bmfl.blobs.store import BlobStore
from bmfl.data import TensorData, load_dataset
from bmfl.models import create_model
from bmfl.params import flatten, unflatten
from bmfl.protocol.schemas import EdgeInfo, TaskSpec, TrainingSpec
from bmfl.protocol.signing import associate_message, now_ms, sign, signed_headers, update_message
from bmfl.protocol.testset import encode_test_set
from service_kit.chain_access import ChainAccess, connect
from service_kit.serve import ServerThread
from chain.anvil import AnvilNode, dev_key, free_port
from chain.deploy import Deployment, deploy, save_deployment
from chain.registry import RegistryClient
from chain.tasks import TaskParams
from tooling import require_anvil
from edge_node.app import create_app
from edge_node.settings import EdgeSettings

OPERATOR, CLOUD, PUBLISHER, FIRST_EDGE = 0, 1, 2, 3
MODEL = "bmfl_cnn"


@dataclass
class ServiceChain:
    """A deployed BMFL on Anvil; ``edge_keys[i]`` is the key of edge index ``i``."""

    node: AnvilNode
    w3: Web3
    deployment: Deployment
    deployment_file: Path
    edge_keys: list[str]
    cloud: LocalAccount = field(default_factory=lambda: Account.from_key(dev_key(CLOUD)))

    @property
    def rpc_url(self) -> str:
        return self.node.url

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id

    def access(self, key: str) -> ChainAccess:
        """Chain clients sending from ``key`` (signed locally)."""
        return connect(self.rpc_url, self.deployment_file, key)


def start_service_chain(directory: Path, edges: int = 2) -> ServiceChain:
    """Start Anvil, deploy, set the cloud, add ``edges`` edges, save the deployment."""
    node = AnvilNode(accounts=FIRST_EDGE + edges).start()
    w3 = Web3(Web3.HTTPProvider(node.url))
    accounts = w3.eth.accounts
    deployment = deploy(w3, accounts[OPERATOR], cloud=accounts[CLOUD])
    registry = RegistryClient(w3, deployment.registry, accounts[OPERATOR])
    for i in range(edges):
        registry.add_edge(accounts[FIRST_EDGE + i])
    path = save_deployment(deployment, directory)
    return ServiceChain(node, w3, deployment, path, [dev_key(FIRST_EDGE + i) for i in range(edges)])


@pytest.fixture(scope="module")
def service_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceChain]:
    """One chain per test module (tests keep apart by using their own tasks and vehicles)."""
    require_anvil()
    chain = start_service_chain(tmp_path_factory.mktemp("deployments"))
    try:
        yield chain
    finally:
        chain.node.stop()


# ------------------------------------------------------------------ vehicles


@dataclass
class Vehicle:
    account: LocalAccount
    index: int
    data: TensorData

    @property
    def address(self) -> str:
        return self.account.address


def register_vehicle(chain: ServiceChain, data: TensorData, categories: int = 1, fund_wei: int = 10**17) -> Vehicle:
    """A fresh key, funded by the operator, registered with ``len(data)`` samples."""
    account = Account.create()
    operator = chain.w3.eth.accounts[OPERATOR]
    tx = chain.w3.eth.send_transaction({"from": operator, "to": account.address, "value": fund_wei})
    chain.w3.eth.wait_for_transaction_receipt(tx)
    registry = chain.access("0x" + bytes(account.key).hex()).registry
    profile = hashlib.sha256(account.address.encode()).digest()
    index, _ = registry.register_vehicle(categories, 0, len(data), profile)
    return Vehicle(account, index, data)


def association_request(
    vehicle: LocalAccount, chain_id: int, edge: str, x: float = 0.0, y: float = 0.0, previous_edge: str | None = None
) -> dict[str, Any]:
    """The JSON of a signed ``POST /associate``."""
    ts = now_ms()
    signature = sign(vehicle, associate_message(chain_id, vehicle.address, edge, x, y, ts))
    body = {"vehicle": vehicle.address, "x": x, "y": y, "timestamp_ms": ts, "signature": signature}
    return body | ({"previous_edge": previous_edge} if previous_edge else {})


def update_form(
    vehicle: LocalAccount, chain_id: int, task_id: int, round_: int, edge: str, blob: bytes, epsilon: float | None = None
) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """``(data, files)`` of a signed ``POST /tasks/{id}/rounds/{r}/updates`` carrying ``blob``."""
    signature = sign(vehicle, update_message(chain_id, task_id, round_, edge, blob_digest(blob).raw))
    data = {"vehicle": vehicle.address, "signature": signature}
    if epsilon is not None:
        data["epsilon"] = str(epsilon)
    return data, {"blob": ("update.safetensors", blob, "application/octet-stream")}


def update_blob(
    global_blob: bytes,
    spec: TaskSpec,
    round_: int,
    vehicle: Vehicle,
    attack: Attack | None = None,
    seed: int = 0,
) -> bytes:
    """A vehicle's update: local training from the global model with the core (and an
    optional attack from the attack library), encoded for the task and round."""
    state, _ = decode_state(global_blob, spec.model)
    context = AttackContext(flatten(state), torch.Generator().manual_seed(seed), round_index=round_)
    vector = local_upload(create_model(spec.model), vehicle.data, spec.training.local(), context, attack)
    meta = BlobMeta(task=str(spec.task_id), round=round_, producer=vehicle.address, model=spec.model)
    return encode_state(unflatten(vector, state), meta)


# ------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class TaskData:
    """The publisher's test set and initial model as blobs, plus training data to deal out."""

    train: TensorData
    test_set: bytes
    initial_model: bytes
    initial_cid: str


def mnist_task_data(store: BlobStore, test_rows: int = 200, seed: int = 0) -> TaskData:
    """A small MNIST test set and a seeded initial ``bmfl_cnn`` (stored in ``store``)."""
    train, test = load_dataset("mnist")
    torch.manual_seed(seed)
    initial = encode_state(create_model(MODEL).state_dict(), BlobMeta(task="0", round=0, producer="publisher", model=MODEL))
    return TaskData(train, encode_test_set(test.subset(list(range(test_rows)))), initial, store.put(initial, pin=True))


def create_task(chain: ServiceChain, data: TaskData, category: int = 1, rounds: int = 3, **spec: Any) -> TaskSpec:
    """``createTask`` from the publisher's account; returns the matching spec (1-epoch
    non-DP training by default, to keep tests fast; τ_max on chain from ``asynchrony``)."""
    asynchrony = spec.get("asynchrony")
    params = TaskParams(
        block_reward=10**15, category=category, max_rounds=rounds, round_duration=3600, challenge_period=0,
        initial_model_digest=blob_digest(data.initial_model).raw, initial_model_cid=data.initial_cid,
        test_set_digest=blob_digest(data.test_set).raw,
        tau_max=asynchrony.tau_max if asynchrony is not None and asynchrony.mode == "async" else 0,
    )  # fmt: skip
    task_id, _ = chain.access(dev_key(PUBLISHER)).tasks.create_task(params, 10**18)
    defaults: dict[str, Any] = dict(
        model=MODEL, category=category, rounds=rounds, reward_wei=10**18, block_reward_wei=10**15,
        round_duration_s=3600, challenge_period_s=0, training=TrainingSpec(epochs=1, batch_size=32, dp=False),
    )  # fmt: skip
    return TaskSpec(task_id=task_id, **(defaults | spec))


# ------------------------------------------------------------------ signed calls and servers


def signed_request(account: LocalAccount, chain_id: int, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """An internal request (``json=``, ``data=``/``files=``) signed over its exact body."""
    request = httpx.Request(method, url, **kwargs)
    body = request.read()
    request.headers.update(signed_headers(account, chain_id, method, request.url.path, body))
    with httpx.Client(timeout=120) as client:
        return client.send(request)


def directory_app(edges: list[EdgeInfo]) -> FastAPI:
    """Serves ``GET /edges`` as the cloud does, for tests that run edges without it."""
    app = FastAPI()

    @app.get("/edges", response_model=list[EdgeInfo])
    def get_edges() -> list[EdgeInfo]:
        return edges

    return app


def serve(app: FastAPI) -> ServerThread:
    """``app`` on a real uvicorn server on a free 127.0.0.1 port (started)."""
    return ServerThread(app).start()


# ------------------------------------------------------------------ edge servers


@dataclass
class EdgeStack:
    """Edge servers on one chain and one local blob store, with the cloud's edge
    directory served beside them; the test plays the cloud with the cloud's dev key."""

    chain: ServiceChain
    store: BlobStore
    data: TaskData
    directory: ServerThread
    settings: list[EdgeSettings]  # per edge index
    servers: list[ServerThread]

    def url(self, edge: int) -> str:
        return self.servers[edge].url

    def address(self, edge: int) -> str:
        return Account.from_key(self.chain.edge_keys[edge]).address

    def cloud(self, method: str, edge: int, path: str, **kwargs: Any) -> httpx.Response:
        """A request to an edge signed by the registry's cloud."""
        return signed_request(self.chain.cloud, self.chain.chain_id, method, self.url(edge) + path, **kwargs)

    def serve_task(self, spec: TaskSpec) -> None:
        """``PUT /tasks/{id}`` at every edge, as the cloud does."""
        task = {"spec": spec.model_dump(mode="json"), "test_set_digest": blob_digest(self.data.test_set).hex0x}
        for edge in range(len(self.servers)):
            files = {"test_set": ("test.safetensors", self.data.test_set, "application/octet-stream")}
            reply = self.cloud("PUT", edge, f"/tasks/{spec.task_id}", data={"task": json.dumps(task)}, files=files)
            assert reply.status_code == 200, reply.text

    def vehicles_at(self, edge: int, count: int, category: int, first_row: int) -> list[Vehicle]:
        """Register ``count`` vehicles (64 training rows each, from ``first_row``) and
        associate them with ``edge``."""
        out = []
        for i in range(count):
            rows = list(range(first_row + 64 * i, first_row + 64 * (i + 1)))
            vehicle = register_vehicle(self.chain, self.data.train.subset(rows), categories=category)
            body = association_request(vehicle.account, self.chain.chain_id, self.address(edge))
            reply = httpx.post(self.url(edge) + "/associate", json=body)
            assert reply.status_code == 200, reply.text
            out.append(vehicle)
        return out

    def start_round(self, task_id: int, global_blob: bytes, cid: str) -> None:
        """``startRound`` on chain from the cloud's account."""
        self.chain.access(dev_key(CLOUD)).tasks.start_round(task_id, blob_digest(global_blob).raw, cid)

    def open_round(self, edge: int, task_id: int, round_: int, global_blob: bytes, cid: str) -> list[int]:
        """The cloud's ``open`` at ``edge``; returns the trainers it committed."""
        body = {"global_cid": cid, "global_digest": blob_digest(global_blob).hex0x}
        reply = self.cloud("POST", edge, f"/tasks/{task_id}/rounds/{round_}/open", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()["selected"]

    def upload(
        self, edge: int, vehicle: Vehicle, task_id: int, round_: int, blob: bytes, epsilon: float | None = None
    ) -> httpx.Response:
        """A correctly signed upload of ``blob``."""
        data, files = update_form(vehicle.account, self.chain.chain_id, task_id, round_, self.address(edge), blob, epsilon)
        return httpx.post(f"{self.url(edge)}/tasks/{task_id}/rounds/{round_}/updates", data=data, files=files)

    def restart(self, edge: int) -> None:
        """Stop an edge and serve a new app on the same state directory and port."""
        port = self.servers[edge].port
        self.servers[edge].stop()
        self.servers[edge] = ServerThread(create_app(self.settings[edge]), port=port).start()

    def stop(self) -> None:
        for server in [*self.servers, self.directory]:
            server.stop()


def start_edge_stack(chain: ServiceChain, directory: Path, edges: int = 2, **settings: Any) -> EdgeStack:
    """Serve ``edges`` edge nodes (edge ``i`` at x = 1000·i) and the edge directory."""
    store = LocalBlobStore(directory / "blobs")
    ports = [free_port() for _ in range(edges)]
    infos = [
        EdgeInfo(index=i, address=Account.from_key(key).address, url=f"http://127.0.0.1:{p}", x=1000.0 * i, y=0.0)
        for i, (key, p) in enumerate(zip(chain.edge_keys, ports))
    ]
    edge_directory = serve(directory_app(infos))
    configs = [
        EdgeSettings(
            rpc_url=chain.rpc_url, deployment=chain.deployment_file, private_key=chain.edge_keys[i],
            blob_store=str(directory / "blobs"), state_dir=directory / f"edge{i}", cloud_url=edge_directory.url,
            x=infos[i].x, y=infos[i].y, **settings,
        )  # fmt: skip
        for i in range(edges)
    ]
    servers = [ServerThread(create_app(c), port=p).start() for c, p in zip(configs, ports)]
    return EdgeStack(chain, store, mnist_task_data(store), edge_directory, configs, servers)


@pytest.fixture(scope="module")
def edge_stack(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    """Two edge servers (edge 0 at x = 0, edge 1 at x = 1000) on the module's chain."""
    stack = start_edge_stack(service_chain, tmp_path_factory.mktemp("edges"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def cloud(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A cloud aggregator with no edges on the module's chain (publishing and validation)."""
    from cloud_aggregator.app import create_app as create_cloud
    from cloud_aggregator.settings import CloudSettings

    directory = tmp_path_factory.mktemp("cloud")
    settings = CloudSettings(
        rpc_url=service_chain.rpc_url, deployment=service_chain.deployment_file, private_key=dev_key(CLOUD),
        blob_store=str(directory / "blobs"), state_dir=directory / "cloud", edges=[], max_blob_bytes=4 << 20,
    )  # fmt: skip
    with ServerThread(create_cloud(settings)) as server:
        yield server
