"""One edge's resources (chain, blob store, state, metrics) and the checks its routes share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from prometheus_client import Counter

from bmfl.blobs.codec import BlobMeta, decode_state, model_spec
from bmfl.blobs.errors import BlobCodecError, BlobError, InvalidCIDError, RemoteError
from bmfl.blobs.store import BlobStore
from bmfl.data.base import TensorData
from bmfl.device import default_device
from bmfl.rounds import task_scorer
from bmfl.rounds.edge import PublisherTestLoss
from bmfl.models import create_model
from bmfl.protocol.schemas import EdgeTask
from bmfl.protocol.signing import checksum_address, valid_address
from bmfl.protocol.testset import decode_test_set
from service_kit.chain_access import ChainAccess
from service_kit.observability import Metrics
from service_kit.problems import ProblemError
from chain.base import ContractRevert
from edge_node.chain_view import ChainView
from edge_node.scoring import Prescorer, Rehearser, RememberedTestLoss, Scorer
from edge_node.settings import EdgeSettings
from edge_node.state import EdgeState

T = TypeVar("T")
LOSS_MEMOS = 4
"""Tasks whose test losses an edge remembers at once (``MEMO_BYTES`` each)."""


@contextmanager
def _store_problems(cid: str, errors: Counter) -> Iterator[None]:
    """Store errors as problems, each counted in ``errors`` by kind."""
    try:
        yield
    except InvalidCIDError as exc:
        errors.labels("invalid_cid").inc()
        raise ProblemError(422, "invalid_request", f"bad CID {cid!r}: {exc}") from None
    except RemoteError as exc:
        errors.labels("unreachable").inc()
        raise ProblemError(503, "blob_store_unavailable", f"blob {cid}: {exc}") from None
    except BlobError as exc:
        errors.labels("unavailable").inc()
        raise ProblemError(422, "blob_unavailable", f"blob {cid}: {exc}") from None


class EdgeMetrics:
    """The edge's Prometheus series, updated where the events happen."""

    def __init__(self) -> None:
        self.metrics = Metrics("edge_node")
        self.uploads = self.metrics.counter("edge_uploads_total", "update uploads by outcome: accepted, resent (the same update again), or the refusal's reason", ("outcome",))
        self.rounds = self.metrics.counter("edge_round_steps_total", "round steps completed", ("step",))
        self.associations = self.metrics.counter("edge_associations_total", "associations by outcome", ("outcome",))
        self.round = self.metrics.gauge("edge_task_round", "latest round this edge opened, per task", ("task",))
        self.close_seconds = self.metrics.histogram("edge_round_close_seconds", "closing a round: filters, aggregation, recordRound")


@dataclass
class EdgeNode:
    """Everything a request handler needs; ``index`` is the edge's registry index."""

    settings: EdgeSettings
    chain: ChainAccess
    store: BlobStore
    state: EdgeState
    index: int
    metrics: EdgeMetrics = field(default_factory=EdgeMetrics)
    _test_sets: dict[int, TensorData] = field(default_factory=dict, init=False)
    _test_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _indices: dict[str, int] = field(default_factory=dict, init=False)  # address → registry index
    _tasks: dict[int, EdgeTask] = field(default_factory=dict, init=False)  # as stored: a served task never changes
    _scorers: dict[int, Scorer] = field(default_factory=dict, init=False)
    _test_losses: OrderedDict[int, RememberedTestLoss] = field(default_factory=OrderedDict, init=False)
    rehearsal: Callable[[int, int], None] = field(default_factory=lambda: lambda task_id, round_: None, init=False)
    """Called with (task, round) after each accepted update (``RoundEngine.rehearse``)."""
    _prescorer: Prescorer = field(default_factory=Prescorer, init=False)
    _rehearser: Rehearser = field(default_factory=Rehearser, init=False)
    view: ChainView = field(init=False)  # the chain as the upload checks read it

    def __post_init__(self) -> None:
        self.view = ChainView(self.chain)

    @property
    def address(self) -> str:
        return self.chain.address

    @property
    def chain_id(self) -> int:
        return self.chain.chain_id

    def transact(self, send: Callable[[], T]) -> T:
        """Run one transaction of the edge's account (one at a time: nonces)."""
        with self.chain.lock:
            return send()

    def task(self, task_id: int) -> EdgeTask:
        """The task as the cloud sent it (parsed once); 404 ``unknown_task`` if it never did."""
        task = self._tasks.get(task_id)
        if task is None:
            row = self.state.task(task_id)
            if row is None:
                raise ProblemError(404, "unknown_task", f"task {task_id} is not served by this edge")
            task = self._tasks.setdefault(task_id, EdgeTask.model_validate_json(row.task))
        return task

    def test_set(self, task_id: int) -> TensorData:
        """The task's private test set on the compute device (decoded once)."""
        with self._test_lock:
            if task_id not in self._test_sets:
                row = self.state.task(task_id)
                assert row is not None, "test sets are stored with their task"
                with open(row.test_set, "rb") as f:
                    self._test_sets[task_id] = decode_test_set(f.read()).to(default_device())
            return self._test_sets[task_id]

    def scorer(self, task_id: int) -> Scorer:
        """The task's memoized test-set scorer (``bmfl.rounds.task_scorer``: accuracies
        for classification, the filter's α and the consensus score alike)."""
        with self._test_lock:
            scorer = self._scorers.get(task_id)
        if scorer is None:
            model = create_model(self.task(task_id).spec.model, default_device())
            scorer = Scorer(task_scorer(model, self.test_set(task_id)))
            with self._test_lock:
                scorer = self._scorers.setdefault(task_id, scorer)
        return scorer

    def test_loss(self, task_id: int) -> RememberedTestLoss:
        """The task's per-example test losses for leave-out testing, remembered by content
        (``bmfl.rounds.edge.PublisherTestLoss`` behind :class:`RememberedTestLoss`)."""
        with self._test_lock:
            losses = self._test_losses.get(task_id)
            if losses is not None:
                self._test_losses.move_to_end(task_id)
        if losses is None:
            model = create_model(self.task(task_id).spec.model, default_device())
            losses = RememberedTestLoss(PublisherTestLoss(model, self.test_set(task_id)))
            with self._test_lock:
                losses = self._test_losses.setdefault(task_id, losses)
                while len(self._test_losses) > LOSS_MEMOS:  # the least recently used task's goes
                    self._test_losses.popitem(last=False)
        return losses

    def rehearse(self, close: Callable[[], object]) -> None:
        """Run a close's computation in the background for what it remembers (:mod:`edge_node.scoring`)."""
        self._rehearser.submit(close)

    def prescore(self, task_id: int, vector: Callable[[], torch.Tensor]) -> None:
        """Score the model ``vector()`` gives in the background, ahead of the step that
        needs its accuracy (:mod:`edge_node.scoring`)."""
        self._prescorer.submit(lambda: self.scorer(task_id), vector)

    def update_arrived(self) -> None:
        """An update is being taken in (scoring ahead gives way)."""
        self._prescorer.arrived()

    def close(self) -> None:
        """Stop rehearsing and scoring ahead (before the state closes: they read test sets)."""
        self._rehearser.close()
        self._prescorer.close()
        self.view.close()

    def known_index(self, vehicle: str) -> int | None:
        """The registry index of ``vehicle`` if this edge has looked it up before (no chain read)."""
        return self._indices.get(checksum_address(vehicle)) if valid_address(vehicle) else None

    def vehicle_index(self, vehicle: str, *, fresh: bool = True) -> int:
        """The registry index of a vehicle registered now; 403 ``unregistered`` otherwise.
        An address keeps its index for good (``BMFLRegistry.registerVehicle`` reuses it on
        re-registration), so it is looked up once; whether it is active is read from
        :attr:`view` after a fresh head read (``fresh=False``: the caller just read one)."""
        if not valid_address(vehicle):
            raise ProblemError(403, "unregistered", f"{vehicle!r} is not an address")
        address = checksum_address(vehicle)
        index = self._indices.get(address)
        if index is None:
            try:
                index = self._indices[address] = self.chain.registry.vehicle_index(address)
            except ContractRevert as exc:
                if exc.name != "NotRegistered":
                    raise
                raise ProblemError(403, "unregistered", f"{vehicle} is not a registered vehicle") from None
        if fresh:
            self.view.head()
        if not self.view.is_active_vehicle(index):
            raise ProblemError(403, "unregistered", f"vehicle {index} ({vehicle}) deregistered")
        return index

    def fetch(self, cid: str) -> bytes:
        """A blob from the store; 422 ``invalid_request`` / ``blob_unavailable``."""
        with _store_problems(cid, self.metrics.metrics.blob_errors):
            return self.store.get(cid)

    def blob_size(self, cid: str) -> int:
        """The size of a blob the store holds; 422 as :meth:`fetch`."""
        with _store_problems(cid, self.metrics.metrics.blob_errors):
            return self.store.stat(cid).size

    @staticmethod
    def decode(blob: bytes, model: str, max_bytes: int | None = None) -> tuple[OrderedDict[str, torch.Tensor], BlobMeta]:
        """A model state and its metadata, decoded strictly; 422 with the codec's reason."""
        try:
            return decode_state(blob, model_spec(model), max_bytes=max_bytes)
        except BlobCodecError as exc:
            raise ProblemError(422, exc.reason.value, exc.detail) from None
