"""Fixtures for the chain tests: one real Anvil per test module, deployed contracts,
named accounts, and a chain snapshot reverted after every test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any
from dataclasses import dataclass

import pytest
from web3 import Web3

from chain.anvil import AnvilNode
from chain.base import ContractRevert
from chain.deploy import Deployment, deploy
from chain.registry import RegistryClient
from chain.tasks import TaskParams, TasksClient, TrainerRecord

from tooling import require_anvil, requires_anvil  # noqa: F401  (re-exported for the chain tests)

N_EDGES = 5
N_VEHICLES = 12


def reverts(name: str) -> AbstractContextManager[Any]:
    """Expect a :class:`ContractRevert` with custom error ``name``."""
    return pytest.raises(ContractRevert, match=rf"^{name}\(")


def digest(label: str) -> bytes:
    """A deterministic 32-byte digest for tests."""
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Chain:
    """A deployed BMFL on Anvil with named accounts (edges and vehicles registered)."""

    node: AnvilNode
    w3: Web3
    deployment: Deployment
    operator: str
    cloud: str
    publisher: str
    outsider: str
    edges: list[str]
    vehicles: list[str]

    def registry(self, sender: str | None = None) -> RegistryClient:
        return RegistryClient(self.w3, self.deployment.registry, sender)

    def tasks(self, sender: str | None = None) -> TasksClient:
        return TasksClient(self.w3, self.deployment.tasks, sender)

    def params(self, **overrides: object) -> TaskParams:
        base: dict[str, object] = dict(
            block_reward=10**15, category=1, max_rounds=2, target_accuracy=0, round_duration=600,
            initial_model_digest=digest("w0"), initial_model_cid="bafy-w0", test_set_digest=digest("test"),
        )  # fmt: skip
        return TaskParams(**(base | overrides))

    def record(self, vehicle: int, theta: int, malicious: bool = False) -> TrainerRecord:
        return TrainerRecord(
            vehicle=vehicle, update_digest=digest(f"u{vehicle}"), reliability=-5 if malicious else 900_000,
            theta=0 if malicious else theta, malicious=malicious,
        )  # fmt: skip

    def run_round(
        self, task_id: int, selection: dict[int, list[int]], thetas: dict[int, int], scores: dict[int, list[int]]
    ) -> None:
        """One full round: start, commits and records per edge, scores, finalize."""
        tasks = self.tasks()
        tasks.as_sender(self.cloud).start_round(task_id, digest("g"), "bafy-g")
        for e, vs in selection.items():
            tasks.as_sender(self.edges[e]).commit_trainers(task_id, vs)
        for e, vs in selection.items():
            records = [self.record(v, thetas.get(v, 0), malicious=thetas.get(v, 0) < 0) for v in vs]
            tasks.as_sender(self.edges[e]).record_round(task_id, digest(f"p{e}"), f"bafy-p{e}", 100, records)
        for e, s in scores.items():
            tasks.as_sender(self.edges[e]).submit_scores(task_id, s)
        tasks.as_sender(self.cloud).finalize_round(task_id, digest("g2"), "bafy-g2", 900_000)

    def mine_after(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def start_chain() -> Chain:
    """Start Anvil, deploy, add the edges and cloud, register the vehicles."""
    node = AnvilNode(accounts=4 + N_EDGES + N_VEHICLES).start()
    w3 = Web3(Web3.HTTPProvider(node.url))
    accounts = list(w3.eth.accounts)
    operator, cloud, publisher, outsider = accounts[:4]
    edges = accounts[4 : 4 + N_EDGES]
    vehicles = accounts[4 + N_EDGES :]
    dep = deploy(w3, operator, cloud=cloud)
    registry = RegistryClient(w3, dep.registry, operator)
    for e in edges:
        registry.add_edge(e)
    for i, v in enumerate(vehicles):
        registry.as_sender(v).register_vehicle(1, 0, 100 + i, digest(f"profile{i}"))
    return Chain(node, w3, dep, operator, cloud, publisher, outsider, edges, vehicles)


@pytest.fixture(scope="module")
def chain_module() -> Iterator[Chain]:
    require_anvil()
    c = start_chain()
    try:
        yield c
    finally:
        c.node.stop()


@pytest.fixture
def chain(chain_module: Chain) -> Iterator[Chain]:
    """The module's chain, reverted to its deployed state after the test."""
    snap = chain_module.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield chain_module
    chain_module.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
