"""Round orchestration: one thread per task drives BMFL's synchronous round (docs/architecture.md,
"One round") across the edges and the chain.

Each step is chosen from the task's on-chain phase and every edge call is idempotent,
so a restarted cloud picks a task up wherever it stopped:

- Idle / Finalized → finish if the stop condition holds, else ``startRound``;
- Training → ``open`` at the edges, wait for the selected vehicles, ``close`` (each edge
  records), ``closeRecording`` (at once when every active edge recorded, else at the
  chain's deadline);
- Scoring → ``scores`` at every recorded edge, second aggregation (Eq. 3), evaluation by
  the edges, ``finalizeRound`` (at once when every recorded edge scored, else at the deadline);
- Finished → once the challenge period is over, settle every payee (pages of
  ``chain.settlement.settle_when_open``), a service to the payees that anyone could do.

Asynchronous mode (BAFDP, seed ``000``): :meth:`TaskRunner._collect` is where it would
go — instead of waiting for every selected vehicle, close the edges after S reports,
carry late updates into the next round with their staleness bound, and aggregate with a
staleness-weighted cloud rule; the phase dispatch in :meth:`TaskRunner._step` stays.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import requests
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes

from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.blobs.errors import BlobError
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.blobs.store import BlobStore
from bmfl.incentives import SCALE, to_fixed
from bmfl.models import create_model
from bmfl.params import flatten, unflatten
from bmfl import rounds
from bmfl.aggregation.server import ServerOptimizer
from bmfl.rounds import aggregate_cloud, buffer_ready, cloud_rule, guard_cloud, server_optimizer
from bmfl.rounds.ratchet import Ratchet
from bmfl.rounds.traffic import Blob, round_transfers, summarise
from bmfl.protocol.schemas import EvaluateRequest, RoundClose, RoundOpen, ScoreRequest, TaskSpec
from service_kit.chain_access import ChainAccess
from service_kit.logs import task_fields
from service_kit.observability import Metrics
from cloud_aggregator.edges import EdgeCallError, EdgeClient
from cloud_aggregator.state import CloudState
from cloud_aggregator.telemetry import CloudTelemetry
from chain.base import ContractRevert
from chain.settlement import settle_when_open
from chain.tasks import Phase, Status, TaskInfo
from cloud_aggregator.status import SETTLED

log = logging.getLogger("bmfl.cloud")
T = TypeVar("T")
CHAIN_RETRY_S, MAX_CHAIN_RETRY_S = 0.5, 10.0


class RoundFailed(RuntimeError):
    """The round cannot complete (no trainers, no uploads, every edge failing)."""


@dataclass
class CloudContext:
    chain: ChainAccess
    store: BlobStore
    state: CloudState
    edges: list[EdgeClient]
    round_timeout_s: float
    poll_interval_s: float
    telemetry: CloudTelemetry = field(default_factory=lambda: CloudTelemetry(Metrics("cloud")))


def stop_reached(info: TaskInfo) -> bool:
    """``BMFLTasks._stopReached`` over the task's state (``bmfl.rounds.stop_reached``)."""
    return rounds.stop_reached(info.round, info.max_rounds, info.target_accuracy, info.last_accuracy, info.phase == Phase.FINALIZED)


class TaskRunner(threading.Thread):
    """Runs one task to its end (or until ``stop`` is set)."""

    def __init__(self, ctx: CloudContext, task_id: int, stop: threading.Event) -> None:
        super().__init__(name=f"task-{task_id}", daemon=True)
        self.ctx, self.task_id, self.stop = ctx, task_id, stop
        self.spec: TaskSpec = ctx.state.task(task_id)["spec"]
        self.model = create_model(self.spec.model)
        self.closes: dict[int, RoundClose] = {}
        self.round_started = time.perf_counter()
        self.progress: dict[str, Any] = {}  # the round being trained: round, selected, received, started_at
        self.pool = ThreadPoolExecutor(max(1, len(ctx.edges)), thread_name_prefix=f"task-{task_id}-edge")

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self._step_retrying():
                pass
        except Exception as exc:  # the task fails visibly; the service keeps running
            if isinstance(exc, ContractRevert):
                self.ctx.telemetry.metrics.chain_errors.labels("reverted").inc()
            log.exception("task %s failed", self.task_id)
            self.ctx.state.set_status(self.task_id, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------- dispatch

    def _step_retrying(self) -> bool:
        """:meth:`_step`, retried with backoff while the chain node does not answer (every
        step is chosen from the chain's phase and idempotent); ``False`` on stop."""
        delay = CHAIN_RETRY_S
        while True:
            try:
                return self._step()
            except requests.RequestException as exc:
                self.ctx.telemetry.metrics.chain_errors.labels("unreachable").inc()
                log.warning("task %s: chain unreachable (%s); retrying in %.1f s", self.task_id, type(exc).__name__, delay)
                if self.stop.wait(delay):
                    return False
                delay = min(2 * delay, MAX_CHAIN_RETRY_S)

    def _step(self) -> bool:
        """Do the next step; ``False`` once the task is over."""
        tasks = self.ctx.chain.tasks
        info = tasks.task(self.task_id)
        self.ctx.telemetry.observe(self.task_id, info)
        if info.status == Status.FINISHED:
            return self._settle(info)
        if info.status != Status.ACTIVE:
            self.ctx.state.set_status(self.task_id, info.status.name.lower())
            return False
        if info.phase in (Phase.IDLE, Phase.FINALIZED):
            if stop_reached(info):
                with self.ctx.chain.lock:
                    tasks.finish_task(self.task_id)
                self.ctx.state.set_status(self.task_id, "finished")
                log.info("task %s finished after round %s", self.task_id, info.round, extra=task_fields(self.task_id, info.round))
                return True  # settlement next
            cid, digest = self._global_model(info.round)
            with self.ctx.chain.lock:
                tasks.start_round(self.task_id, digest, cid)
            self.ctx.state.set_status(self.task_id, "running")
            log.info("task %s: round %s started from %s", self.task_id, info.round + 1, cid, extra=task_fields(self.task_id, info.round + 1))
        elif info.phase == Phase.TRAINING:
            self._train(info.round)
        else:
            self._finalize(info.round)
        return True

    # ------------------------------------------------------------- steps

    def _global_model(self, round_: int) -> tuple[str, bytes]:
        """CID and digest of w^{round}: the initial model, or the last finalized one."""
        if round_ == 0:
            cid = self.ctx.state.task(self.task_id)["initial_cid"]
            return cid, blob_digest(self.ctx.store.get(cid)).raw
        ev = self.ctx.chain.tasks.events("RoundFinalized", self.ctx.chain.deployment.block_number, taskId=self.task_id, round=round_)[0]
        return ev.globalCid, bytes.fromhex(ev.globalDigest.removeprefix("0x"))  # type: ignore[attr-defined]

    def _train(self, r: int) -> None:
        """Open the round at every edge, wait for the uploads, close, cross-evaluate."""
        self.round_started = time.perf_counter()
        self.progress = {"round": r, "selected": 0, "received": 0, "started_at": time.time()}
        cid, digest = self._global_model(r - 1)
        opened = RoundOpen(global_cid=cid, global_digest="0x" + digest.hex())
        selected = {v for s in self._each(lambda e: e.open_round(self.task_id, r, opened)).values() for v in s.selected}
        log.info("task %s: round %s open, %d trainers selected", self.task_id, r, len(selected), extra=task_fields(self.task_id, r))
        if not selected:
            raise RoundFailed("no associated vehicle matches the task's category at any edge")
        self.progress["selected"] = len(selected)
        if not self._collect(r, selected):
            return
        self.closes = self._each(lambda e: e.close_round(self.task_id, r))
        if not any(c.preliminary_cid for c in self.closes.values()):
            raise RoundFailed(f"no update reached any edge in round {r}")
        self._at_deadline("EdgesMissing", lambda: self.ctx.chain.tasks.close_recording(self.task_id))

    def _at_deadline(self, waits_on: str, send: Callable[[], object]) -> None:
        """``send`` now; if the contract refuses with ``waits_on`` (an edge has not done its
        part yet), again once the step's on-chain deadline has passed."""
        try:
            with self.ctx.chain.lock:
                send()
            return
        except ContractRevert as exc:
            if exc.name != waits_on:
                raise
            deadline = self.ctx.chain.tasks.task(self.task_id).deadline
            log.warning("task %s: %s; waiting for the deadline %s", self.task_id, exc, deadline)
        if self.stop.wait(max(0.0, deadline + 1 - time.time())):
            return
        with self.ctx.chain.lock:
            send()

    def _settle(self, info: TaskInfo) -> bool:
        """Settle every payee once the challenge period is over; ``False`` when done. A task
        swept at its finish (no round reached consensus, so the escrow went back to the
        publisher) has nothing left to settle."""
        if self.ctx.state.task(self.task_id).get("detail") == SETTLED:
            return False
        if info.swept:
            self.ctx.state.set_status(self.task_id, "finished", SETTLED)
            log.info("task %s: nothing to split, the escrow went back to the publisher", self.task_id, extra=task_fields(self.task_id))
            return False
        wait_s = info.settle_after + 1 - time.time()
        if wait_s > 0:
            return not self.stop.wait(wait_s)
        with self.ctx.chain.lock:
            settled = settle_when_open(self.ctx.chain.tasks, self.task_id, self.ctx.chain.deployment.block_number)
        if settled is None:  # the chain's clock has not passed settleAfter yet
            return not self.stop.wait(1.0)
        self.ctx.state.set_status(self.task_id, "finished", SETTLED)
        log.info("task %s: every payee settled", self.task_id, extra=task_fields(self.task_id))
        return False

    def _collect(self, r: int, selected: set[int]) -> bool:
        """Wait until every selected vehicle has uploaded somewhere, or the timeout; in an
        asynchronous task only until the edges hold the buffer (``buffer_ready``: S reports,
        stale ones included, or ``timeout_s`` with one). ``False`` if the cloud is shutting down."""
        started = time.monotonic()
        asynchrony = self.spec.asynchrony
        while time.monotonic() < started + self.ctx.round_timeout_s:
            if self.stop.is_set():
                return False
            received = {v for p in self._each(lambda e: e.progress(self.task_id, r)).values() for v in p.received}
            self.progress["received"] = len(received & selected)
            if selected <= received:
                break
            waited = time.monotonic() - started
            if asynchrony.mode == "async" and buffer_ready(len(received), waited, asynchrony, len(selected)):
                break
            time.sleep(self.ctx.poll_interval_s)
        return True

    def _finalize(self, r: int) -> None:
        """Second aggregation (``bmfl.rounds.aggregate_cloud``, BMFL Eq. 3), evaluation,
        ``finalizeRound``. With no edge carrying data, w^r = w^{r-1}."""
        started = self.round_started
        closes = self.closes or self._each(lambda e: e.close_round(self.task_id, r))
        request = ScoreRequest(preliminaries={i: c.preliminary_cid for i, c in closes.items() if c.preliminary_cid})
        self._each(lambda e: e.scores(self.task_id, r, request), [i for i, c in closes.items() if c.recorded])
        recorded = {i: c for i, c in closes.items() if c.preliminary_cid}
        preliminaries, samples, sizes = {}, {}, {}
        for i, c in recorded.items():
            blob = self._fetch(c.preliminary_cid, i)  # type: ignore[arg-type]
            sizes[i] = (len(blob), c.preliminary_cid)
            if blob_digest(blob).hex0x != c.preliminary_digest:
                raise RoundFailed(f"edge {i}'s preliminary model does not match its digest")
            preliminaries[i] = flatten(decode_state(blob, self.spec.model)[0])
            samples[i] = c.samples
        cid, digest = self._global_model(r - 1)
        previous = self.ctx.store.get(cid)
        reference = flatten(decode_state(previous, self.spec.model)[0])
        server = self._server(r - 1)
        outcome = aggregate_cloud(cloud_rule(self.spec.aggregation), preliminaries, samples, reference, r, server)
        if outcome is None:
            blob, new_cid = previous, cid
        else:
            state = unflatten(outcome.model, self.model.state_dict())
            blob = encode_state(state, BlobMeta(str(self.task_id), r, self.ctx.chain.address, self.spec.model))
            new_cid = self.ctx.store.put(blob, pin=True)
        evaluations = list(self._each(lambda e: e.evaluate(self.task_id, EvaluateRequest(cid=new_cid)), recorded).values())
        if not evaluations:
            raise RoundFailed(f"no edge could evaluate the global model of round {r}")
        accuracy = statistics.median(e.accuracy or 0.0 for e in evaluations)
        back = None  # the round whose global model stands instead of this round's (the ratchet refused it)
        if outcome is not None and (ratchet := self._ratchet(r)) is not None:
            ratchet, cids = ratchet
            if (back := guard_cloud(outcome, accuracy, ratchet, r, server).rolled_back_to) is not None:
                new_cid, accuracy = cids[back], ratchet.best.accuracy / SCALE  # type: ignore[union-attr]
                blob = self.ctx.store.get(new_cid)
                log.info("task %s: round %s's global model refused by the ratchet", self.task_id, r, extra=task_fields(self.task_id, r))
        if server.name != "paper":
            self.ctx.state.put_server_state(self.task_id, r, tensors_to_bytes(server.state()))
        self._at_deadline(
            "ScoresMissing",
            lambda: self.ctx.chain.tasks.finalize_round(self.task_id, blob_digest(blob).raw, new_cid, to_fixed(accuracy)),
        )
        elected = self.ctx.chain.tasks.events("LeaderElected", self.ctx.chain.deployment.block_number, taskId=self.task_id, round=r)
        leader = elected[0] if elected else None
        record = self._record(r, new_cid, blob, accuracy, evaluations, leader, closes, started)
        record["rolled_back_to"] = back  # with it, "loss" is the refused model's (the edges evaluated that one)
        record["traffic"] = round_traffic((len(previous), cid), closes, sizes, ((len(blob), new_cid), list(recorded)))
        self.ctx.state.put_round(self.task_id, r, record)
        self.ctx.telemetry.round_seconds.observe(time.perf_counter() - started)
        log.info(
            "task %s: round %s finalized, accuracy %.4f, leader %s", self.task_id, r, accuracy, leader.leader if leader else None,  # type: ignore[attr-defined]
            extra=task_fields(self.task_id, r),
        )  # fmt: skip
        self.closes = {}

    # ------------------------------------------------------------- helpers

    def _each(self, call: Callable[[EdgeClient], T], only: Iterable[int] | None = None) -> dict[int, T]:
        """``call`` at every edge (or the edges ``only``), all at once → edge index →
        answer; an edge that fails is logged and left out, the round goes on with the
        others."""
        wanted = None if only is None else set(only)
        edges = [e for e in self.ctx.edges if wanted is None or e.info.index in wanted]
        futures = {e.info.index: self.pool.submit(call, e) for e in edges}
        wait(futures.values())
        answers: dict[int, T] = {}
        for index, future in futures.items():
            try:
                answers[index] = future.result()
            except EdgeCallError as exc:
                log.warning("task %s: %s", self.task_id, exc)
        return answers

    def _ratchet(self, round_: int) -> tuple[Ratchet, dict[int, str]] | None:
        """The task's rollback guard (``bmfl.rounds.ratchet``; None without one, or in an
        asynchronous task) after rounds 1 … ``round_`` − 1 as ``RoundFinalized`` recorded
        them (global model and accuracy), with their CIDs by round."""
        if self.spec.aggregation.ratchet is None or self.spec.asynchrony.mode == "async":
            return None
        chain = self.ctx.chain
        events = [ev for ev in chain.tasks.events("RoundFinalized", chain.deployment.block_number, taskId=self.task_id)
                  if ev.round < round_]  # type: ignore[attr-defined]  # fmt: skip
        cids = {ev.round: ev.globalCid for ev in events}  # type: ignore[attr-defined]
        ratchet = Ratchet.replay(
            self.spec.aggregation.ratchet, [(ev.round, ev.accuracy) for ev in events],  # type: ignore[attr-defined]
            lambda r: flatten(decode_state(self.ctx.store.get(cids[r]), self.spec.model)[0]),
        )  # fmt: skip
        return ratchet, cids

    def _server(self, round_: int) -> ServerOptimizer:
        """The task's server optimiser with its state after ``round_`` (fresh at 0)."""
        server = server_optimizer(self.spec.aggregation, self.spec.rounds)
        if server.name == "paper" or round_ == 0:
            return server
        state = self.ctx.state.server_state(self.task_id, round_)
        if state is None:
            raise RoundFailed(f"the {server.name} state after round {round_} is not in the cloud's state")
        return server.load(tensors_from_bytes(state))

    def _edge(self, edge_index: int) -> EdgeClient:
        return next(e for e in self.ctx.edges if e.info.index == edge_index)

    def _fetch(self, cid: str, edge_index: int) -> bytes:
        """A blob from the cloud's store, else from the edge's gateway (verified by CID)."""
        if self.ctx.store.has(cid):
            return self.ctx.store.get(cid)
        gateway = GatewayClient(self._edge(edge_index).info.url)
        try:
            blob = gateway.fetch(cid)
        except BlobError:
            self.ctx.telemetry.metrics.blob_errors.labels("gateway").inc()
            raise
        finally:
            gateway.close()
        self.ctx.store.put(blob)
        return blob

    def _record(self, r, cid, blob, accuracy, evaluations, leader, closes, started) -> dict[str, Any]:
        trainers = [t for c in closes.values() for t in c.trainers]
        progress = self.progress if self.progress.get("round") == r else {}
        return {
            "round": r,
            "global_cid": cid,
            "global_digest": blob_digest(blob).hex0x,
            "accuracy": accuracy,
            "loss": statistics.median(e.loss for e in evaluations),
            "leader": leader.leader if leader else None,  # type: ignore[attr-defined]
            "medians": [m / SCALE for m in leader.medians] if leader else [],  # type: ignore[attr-defined]
            "edges": {i: c.model_dump(exclude={"trainers"}) for i, c in closes.items()},
            "trainers": [t.model_dump() for t in trainers],
            "flagged": sorted(t.address for t in trainers if t.malicious),
            "wall_time_s": time.perf_counter() - started,
            "started_at": progress.get("started_at"),
            "finished_at": time.time(),
            "selected": progress.get("selected"),
            "received": progress.get("received"),
        }


def round_traffic(reference: Blob, closes: dict[int, RoundClose], preliminaries: dict[int, Blob], evaluation) -> dict:
    """Bytes up and down per vehicle (by address), edge and the cloud in one round
    (``bmfl.rounds.traffic``), from the blob sizes the edges reported and the cloud read."""
    uploads = {i: {t.address: (t.upload_bytes, None) for t in c.trainers} for i, c in closes.items()}
    return summarise(round_transfers(reference, uploads, preliminaries, evaluation)).as_dict()


class Orchestrator:
    """Starts a :class:`TaskRunner` per running task (again after a restart)."""

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.runners: dict[int, TaskRunner] = {}

    def start(self, task_id: int) -> None:
        runner = self.runners.get(task_id)
        if runner is None or not runner.is_alive():
            self.runners[task_id] = runner = TaskRunner(self.ctx, task_id, self.stop)
            runner.start()

    def resume(self) -> None:
        for task in self.ctx.state.tasks():
            if task["status"] in ("ready", "running") or (task["status"] == "finished" and task["detail"] != SETTLED):
                self.start(task["task_id"])

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for runner in self.runners.values():
            runner.join(timeout)
