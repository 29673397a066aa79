"""Fixtures for the chain tests: one real Anvil per test module, deployed contracts,
named accounts, and a chain snapshot reverted after every test; helpers that build
vehicle-signed records, play the round state machine and travel in time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
import requests
from web3 import Web3
from web3.types import RPCEndpoint

from bmfl.protocol.signing import sign, update_message

from chain.anvil import AnvilNode, dev_key
from chain.base import ContractRevert, Receipt
from chain.deploy import Deployment, deploy
from chain.registry import RegistryClient
from chain.settlement import settle_task
from chain.tasks import TaskParams, TasksClient, TrainerRecord

from tooling import require_anvil, requires_anvil  # noqa: F401  (re-exported for the chain tests)

N_EDGES = 5
N_VEHICLES = 12
CLAIM_WINDOW = 90 * 86_400
"""``BMFLTasks.CLAIM_WINDOW``."""


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
        return self._client(RegistryClient, self.deployment.registry, sender)

    def tasks(self, sender: str | None = None) -> TasksClient:
        return self._client(TasksClient, self.deployment.tasks, sender)

    def _client(self, kind: Any, address: str, sender: str | None) -> Any:
        """One client per (contract, sender) for the module: a client holds no chain state,
        and building web3's contract object from the ABI costs more than most calls."""
        cache: dict[tuple[Any, str, str | None], Any] = self.__dict__.setdefault("_clients", {})
        key = (kind, address, sender)
        if key not in cache:
            cache[key] = kind(self.w3, address, sender)
        return cache[key]

    def params(self, **overrides: object) -> TaskParams:
        base: dict[str, object] = dict(
            block_reward=10**15, category=1, max_rounds=2, target_accuracy=0, round_duration=600,
            initial_model_digest=digest("w0"), initial_model_cid="bafy-w0", test_set_digest=digest("test"),
        )  # fmt: skip
        return TaskParams(**(base | overrides))

    # ------------------------------------------------------------ vehicle-signed records

    def vehicle_key(self, vehicle: int) -> LocalAccount:
        """The private key of fixture vehicle ``vehicle`` (its Anvil dev account)."""
        return vehicle_account(4 + N_EDGES + vehicle)

    def update_digest(self, task_id: int, round_: int, vehicle: int) -> bytes:
        return digest(f"u{task_id}/{round_}/{vehicle}")

    def record(
        self, task_id: int, round_: int, edge: int, vehicle: int, theta: int, malicious: bool = False, *,
        signer: LocalAccount | None = None, signed_edge: str | None = None, signed_round: int | None = None,
        signed_task: int | None = None, update: bytes | None = None, staleness: int = 0,
    ) -> TrainerRecord:  # fmt: skip
        """A record of ``vehicle``'s upload to edge index ``edge``, signed by the vehicle's own
        key for this task, its base version round − ``staleness`` and edge (the keyword
        arguments forge any part of it)."""
        upload = update if update is not None else self.update_digest(task_id, round_, vehicle)
        message = update_message(
            self.w3.eth.chain_id, task_id if signed_task is None else signed_task,
            round_ - staleness if signed_round is None else signed_round, signed_edge or self.edges[edge], upload,
        )  # fmt: skip
        signature = sign(signer or self.vehicle_key(vehicle), message)
        return TrainerRecord(
            vehicle=vehicle, update_digest=upload, reliability=-5 if malicious else 900_000,
            theta=0 if malicious else theta, malicious=malicious, signature=bytes.fromhex(signature[2:]),
            staleness=staleness,
        )  # fmt: skip

    def records(self, task_id: int, round_: int, edge: int, vehicles: list[int], thetas: dict[int, int]) -> list[TrainerRecord]:
        """Signed records of ``vehicles`` at ``edge``; θ < 0 in ``thetas`` means flagged."""
        return [self.record(task_id, round_, edge, v, max(thetas.get(v, 0), 0), thetas.get(v, 0) < 0) for v in vehicles]

    # ------------------------------------------------------------ round steps

    def start(self, task_id: int, label: str = "g") -> int:
        """Cloud: start the next round; returns its number."""
        ev = self.tasks(self.cloud).start_round(task_id, digest(label), f"bafy-{label}").event("RoundStarted")
        return int(ev.round)  # type: ignore[attr-defined]

    def record_edge(self, task_id: int, edge: int, vehicles: list[int], thetas: dict[int, int]) -> Receipt:
        """Edge ``edge`` records the current round with signed records of ``vehicles``."""
        round_ = self.tasks().task(task_id).round
        records = self.records(task_id, round_, edge, vehicles, thetas)
        return self.tasks(self.edges[edge]).record_round(task_id, round_, digest(f"p{edge}"), f"bafy-p{edge}", 100, records)

    def close(self, task_id: int) -> Receipt:
        """Close recording: the cloud when every active edge recorded, else anyone past the deadline."""
        info = self.tasks().task(task_id)
        if self.registry().active_edge_mask() & ~info.recorded_edges:
            self.past_deadline(task_id)
            return self.tasks(self.outsider).close_recording(task_id)
        return self.tasks(self.cloud).close_recording(task_id)

    def score(self, task_id: int, scores: dict[int, list[int]]) -> None:
        for e, s in scores.items():
            self.tasks(self.edges[e]).submit_scores(task_id, s)

    def finalize(self, task_id: int, accuracy: int = 900_000, label: str = "g2") -> Receipt:
        """Cloud: finalize (past the scoring deadline when a recorded edge did not score)."""
        info = self.tasks().task(task_id)
        if info.scored_edges != info.recorded_edges:
            self.past_deadline(task_id)
        return self.tasks(self.cloud).finalize_round(task_id, digest(label), f"bafy-{label}", accuracy)

    def run_round(
        self, task_id: int, at: dict[int, list[int]], thetas: dict[int, int], scores: dict[int, list[int]],
        accuracy: int = 900_000,
    ) -> Receipt:  # fmt: skip
        """One full round: start; each edge in ``at`` records its vehicles (θ < 0: flagged);
        close; the edges in ``scores`` score; finalize. Returns the finalize receipt."""
        self.start(task_id)
        for e, vs in at.items():
            self.record_edge(task_id, e, vs, thetas)
        self.close(task_id)
        self.score(task_id, scores)
        return self.finalize(task_id, accuracy)

    def settle_all(self, task_id: int) -> list[Receipt]:
        """After ``finishTask``: wait out the challenge period and settle every payee."""
        self.after_challenges(task_id)
        return settle_task(self.tasks(self.outsider), task_id)

    # ------------------------------------------------------------ time

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def mine_at(self, timestamp: int) -> None:
        """Mine one block at ``timestamp`` (later blocks follow it)."""
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def mine_after(self, seconds: int) -> None:
        self.mine_at(self.now() + seconds)

    def past_deadline(self, task_id: int) -> None:
        """Just past the current step's deadline (not yet stalled)."""
        self.mine_at(max(self.now(), self.tasks().task(task_id).deadline) + 1)

    def stall(self, task_id: int) -> None:
        """Past deadline + round duration: the task is stalled."""
        info = self.tasks().task(task_id)
        self.mine_at(max(self.now(), info.deadline + info.round_duration) + 1)

    def after_challenges(self, task_id: int) -> None:
        """Past ``settleAfter`` of a finished task."""
        self.mine_at(max(self.now(), self.tasks().task(task_id).settle_after) + 1)

    def after_claim_window(self, task_id: int) -> None:
        """Past ``settleAfter + CLAIM_WINDOW``: the publisher may sweep."""
        self.mine_at(max(self.now(), self.tasks().task(task_id).settle_after + CLAIM_WINDOW) + 1)


@lru_cache(maxsize=None)
def vehicle_account(index: int) -> LocalAccount:
    """Anvil dev account ``index`` as a signing key (derived once per process)."""
    return Account.from_key(dev_key(index))


def local_web3(url: str) -> Web3:
    """``Web3`` on a local node as the services connect (``service_kit.chain_access``): the chain
    id, which web3 asks for before every call, answered from the provider's cache after the
    first; and no proxy lookup in the environment on every request (the node is local)."""
    session = requests.Session()
    session.trust_env = False
    provider = Web3.HTTPProvider(url, session=session, cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")})
    return Web3(provider)


def start_chain() -> Chain:
    """Start Anvil, deploy, add the edges and cloud, register the vehicles."""
    node = AnvilNode(accounts=4 + N_EDGES + N_VEHICLES).start()
    w3 = local_web3(node.url)
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
