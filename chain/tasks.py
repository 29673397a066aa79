"""Typed client of ``BMFLTasks``: tasks, rounds, records, cross-evaluation, challenges,
settlement and claims."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field
from web3 import Web3

from bmfl.incentives import SCALE
from bmfl.protocol.schemas import TaskDraft
from bmfl.rounds.stop import target_fixed
from chain.base import ChainEvent, ContractClient, Receipt
from chain.records import MAX_STALENESS, RECORD_BYTES, RoundLog, TrainerRecord, pack_records, unpack_records

ACCURACY_SCALE = SCALE
"""Fixed-point scale of accuracies and scores on chain: ``BMFLTasks.ACCURACY_SCALE``, which
is ``bmfl.incentives.SCALE`` (tests/test_contract_mirrors.py)."""


class Status(IntEnum):
    """Lifecycle of a task."""

    NONE = 0
    ACTIVE = 1
    FINISHED = 2
    CANCELLED = 3


class Phase(IntEnum):
    """Phase of a task's current round."""

    IDLE = 0
    TRAINING = 1
    SCORING = 2
    FINALIZED = 3


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class TaskParams(_Frozen):
    """What a publisher fixes when creating a task (the escrow is the value sent)."""

    block_reward: int = Field(ge=0, lt=2**96)
    category: int = Field(gt=0, lt=2**32)
    max_rounds: int = Field(gt=0, lt=2**16)
    target_accuracy: int = Field(default=0, ge=0, le=ACCURACY_SCALE)
    round_duration: int = Field(default=3600, gt=0, lt=2**32)
    challenge_period: int = Field(default=0, ge=0, lt=2**32)
    initial_model_digest: bytes = Field(min_length=32, max_length=32)
    initial_model_cid: str = ""
    test_set_digest: bytes = Field(min_length=32, max_length=32)
    tau_max: int = Field(default=0, ge=0, le=MAX_STALENESS)

    def as_tuple(self) -> tuple[object, ...]:
        """ABI tuple of ``BMFLTasks.TaskParams``."""
        return (
            self.block_reward, self.category, self.max_rounds, self.target_accuracy, self.round_duration,
            self.challenge_period, self.initial_model_digest, self.initial_model_cid, self.test_set_digest, self.tau_max,
        )  # fmt: skip

    @classmethod
    def from_created(cls, event: ChainEvent) -> TaskParams:
        """The parameters a ``TaskCreated`` event logged (its ``escrow`` is the value sent)."""
        raw = {name: getattr(event, _camel(name)) for name in cls.model_fields}
        for name in ("initial_model_digest", "test_set_digest"):
            raw[name] = bytes.fromhex(raw[name].removeprefix("0x"))
        return cls(**raw)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def task_params(draft: TaskDraft, initial_model_digest: bytes, initial_model_cid: str, test_set_digest: bytes) -> TaskParams:
    """``createTask``'s parameters for ``draft`` (escrow: ``draft.reward_wei``, sent as the
    value), the one mapping the publisher sends and the cloud checks the chain against
    (τ_max: the draft's in an asynchronous task, 0 in a synchronous one);
    raises pydantic's ``ValidationError`` (a ``ValueError``) for a draft the contract cannot hold."""
    return TaskParams(
        block_reward=draft.block_reward_wei, category=draft.category, max_rounds=draft.rounds,
        target_accuracy=target_fixed(draft.target_accuracy), round_duration=draft.round_duration_s,
        challenge_period=draft.challenge_period_s, initial_model_digest=initial_model_digest,
        initial_model_cid=initial_model_cid, test_set_digest=test_set_digest,
        tau_max=draft.asynchrony.reach,
    )  # fmt: skip


class TaskInfo(_Frozen):
    """A task's on-chain state (field order of ``BMFLTasks.Task``)."""

    status: Status
    phase: Phase
    round: int
    max_rounds: int
    deadline: int
    recorded_edges: int
    scored_edges: int
    tau_max: int
    publisher: str
    category: int
    round_duration: int
    target_accuracy: int
    escrow: int
    block_reward: int
    last_accuracy: int
    challenge_period: int
    rewards_paid: int
    payouts_paid: int
    settle_after: int
    score_total: int
    swept: bool
    test_set_digest: bytes
    initial_model_digest: bytes


class RoundResult(_Frozen):
    """A finalized round."""

    global_digest: bytes
    accuracy: int
    leader: int


class EdgeBook(_Frozen):
    """What an edge accumulated over a task: S_ℓ, C_ℓ and its round counts."""

    score_sum: int
    theta_total: int
    rounds_recorded: int
    rounds_led: int


class RecordedRound(_Frozen):
    """One ``recordRound`` call as the chain keeps it: the event and the records from its calldata."""

    edge: int
    round: int
    preliminary_digest: bytes
    preliminary_cid: str
    samples: int
    entry: RoundLog
    records: list[bytes]
    manifest_cid: str
    tx_hash: str

    def decoded(self) -> list[TrainerRecord]:
        return unpack_records(b"".join(self.records))


class PayeeClaim(_Frozen):
    """What ``settle`` takes for one payee: (log index, position, packed record, proof) per record."""

    vehicle: int
    records: list[tuple[int, int, bytes, list[bytes]]]

    def as_tuple(self) -> tuple[int, list[tuple[int, int, bytes, list[bytes]]]]:
        return (self.vehicle, self.records)


TIMED_GAS = 4_000_000
"""Gas limit of the calls that depend on time (deadlines, the challenge period), sent
without the node's estimate (``ContractClient.send``)."""
SETTLE_GAS = 16_000_000
"""Gas limit of a ``settle`` page: under Anvil's 2^24 per-transaction cap."""


def round_starts(started: Iterable[ChainEvent], up_to: int) -> list[str]:
    """The digests of the models rounds 1 … ``up_to`` began from, in round order, from a
    task's ``RoundStarted`` events in block order (a round started again counts by its
    last start): the input of ``bmfl.rounds.refused_in_a_row``, which every edge and an
    auditor read the same way."""
    digests: dict[int, str] = {}
    for ev in started:
        if ev.round <= up_to:  # type: ignore[attr-defined]
            digests[ev.round] = ev.globalDigest.lower()  # type: ignore[attr-defined]
    return [digests[r] for r in sorted(digests)]


CALLDATA_KEPT = 16 * 2**20
"""Bytes of ``recordRound`` records a :class:`TasksClient` keeps (117 a record: about
140,000 records)."""


def standings_before(recorded: Iterable[RecordedRound], round_: int) -> dict[int, float]:
    """Vehicle → its standing in the task after its latest record before round ``round_``,
    at whichever edge recorded it (the record's Λ is −S, ``bmfl.rounds.standing``); of two
    records of one vehicle in that round, the higher standing (order-free). What every edge
    closing round ``round_`` and an auditor re-executing that close start from: a vehicle
    that hands over to another edge takes its standing with it."""
    latest: dict[int, tuple[int, float]] = {}
    for rec in recorded:
        if rec.round < round_:
            for record in rec.decoded():
                standing = -record.reliability / SCALE
                if (rec.round, standing) > latest.get(record.vehicle, (0, 0.0)):
                    latest[record.vehicle] = (rec.round, standing)
    return {v: standing for v, (_, standing) in sorted(latest.items())}


class TasksClient(ContractClient):
    """``BMFLTasks``; each method sends from the client's ``sender`` (see :meth:`as_sender`)."""

    artifact = "BMFLTasks"

    def __init__(self, w3: Web3, address: str, sender: str | None = None) -> None:
        super().__init__(w3, address, sender)
        self._calldata: OrderedDict[str, bytes] = OrderedDict()  # tx hash → records, most recently used last
        self._calldata_bytes = 0
        self._calldata_lock = threading.Lock()

    # publisher
    def create_task(self, params: TaskParams, escrow_wei: int) -> tuple[int, Receipt]:
        """Create a task escrowing ``escrow_wei``; returns its id."""
        receipt = self.send(self.contract.functions.createTask(params.as_tuple()), value=escrow_wei)
        return int(receipt.event("TaskCreated").taskId), receipt  # type: ignore[attr-defined]

    def cancel_task(self, task_id: int) -> Receipt:
        """Cancel a stalled task (anyone); the unspent escrow becomes the publisher's."""
        return self.send(self.contract.functions.cancelTask(task_id), gas=TIMED_GAS)

    # cloud
    def start_round(self, task_id: int, global_digest: bytes, global_cid: str) -> Receipt:
        """Cloud: start the next round from the global model."""
        return self.send(self.contract.functions.startRound(task_id, global_digest, global_cid))

    def close_recording(self, task_id: int) -> Receipt:
        """Close recording (the cloud once every active edge recorded; anyone after the deadline)."""
        return self.send(self.contract.functions.closeRecording(task_id), gas=TIMED_GAS)

    def finalize_round(self, task_id: int, global_digest: bytes, global_cid: str, accuracy: int) -> Receipt:
        """Cloud: elect the leader (with a quorum) and record the new global model and its accuracy."""
        fn = self.contract.functions.finalizeRound(task_id, global_digest, global_cid, accuracy)
        return self.send(fn, gas=TIMED_GAS)

    def finish_task(self, task_id: int) -> Receipt:
        """End the task once its stop condition holds (anyone); settlement opens after the challenge period."""
        return self.send(self.contract.functions.finishTask(task_id))

    # edges
    def record_round(
        self, task_id: int, round_: int, preliminary_digest: bytes, preliminary_cid: str, samples: int,
        records: list[TrainerRecord], manifest_cid: str = "",
    ) -> Receipt:  # fmt: skip
        """Edge: record the round in one call (possibly with no records); ``manifest_cid``
        names the edge's manifest of the round (every update's CID and verdict)."""
        fn = self.contract.functions.recordRound(
            task_id, round_, preliminary_digest, preliminary_cid, samples, pack_records(records), manifest_cid
        )
        return self.send(fn)

    def submit_scores(self, task_id: int, scores: list[int]) -> Receipt:
        """Edge: test-set scores of every edge's preliminary model (index = edge index)."""
        return self.send(self.contract.functions.submitScores(task_id, scores))

    # anyone
    def challenge_record(
        self, task_id: int, edge: int, log: list[RoundLog], log_index: int, position: int, record: bytes,
        proof: list[bytes],
    ) -> Receipt:  # fmt: skip
        """Void a record its vehicle did not sign for this edge and round (or of the wrong category)."""
        entries = [e.as_tuple() for e in log]
        return self.send(self.contract.functions.challengeRecord(task_id, edge, entries, (log_index, position, record, proof)))

    def challenge_replay(
        self, task_id: int, edge: int, log: list[RoundLog], earlier: tuple[int, int, bytes, list[bytes]],
        later: tuple[int, int, bytes, list[bytes]],
    ) -> Receipt:  # fmt: skip
        """Void ``later`` (log index, position, record, proof), which repeats ``earlier``: the
        same vehicle and base version in an earlier entry of ``edge``'s log."""
        entries = [e.as_tuple() for e in log]
        return self.send(self.contract.functions.challengeReplay(task_id, edge, entries, earlier, later))

    def settle(self, task_id: int, edge: int, log: list[RoundLog], claims: list[PayeeClaim]) -> Receipt:
        """Credit payees of ``edge`` from their proven records."""
        entries = [e.as_tuple() for e in log]
        fn = self.contract.functions.settle(task_id, edge, entries, [c.as_tuple() for c in claims])
        return self.send(fn, gas=SETTLE_GAS, abi_ready=True)  # ints and bytes: thousands of proof hashes per page

    def sweep(self, task_id: int) -> Receipt:
        """Return what was not settled to the publisher once the claim window ended."""
        return self.send(self.contract.functions.sweep(task_id), gas=TIMED_GAS)

    def claim(self) -> Receipt:
        """Withdraw everything the sender is owed."""
        return self.send(self.contract.functions.claim())

    # views
    def task_count(self) -> int:
        """Tasks created so far (ids 1..count)."""
        return int(self.call(self.contract.functions.taskCount()))

    def task(self, task_id: int, block: int | str = "latest") -> TaskInfo:
        """The task's state (at ``block``)."""
        fields = self.call(self.contract.functions.task(task_id), block)
        return TaskInfo(**dict(zip(TaskInfo.model_fields, fields)))

    def round_result(self, task_id: int, round_: int) -> RoundResult:
        """A finalized round's global digest, accuracy and leader (``NO_LEADER`` without quorum)."""
        return RoundResult(**dict(zip(RoundResult.model_fields, self.call(self.contract.functions.roundResult(task_id, round_)))))

    def edge_book(self, task_id: int, edge: int) -> EdgeBook:
        """An edge's totals in the task."""
        return EdgeBook(**dict(zip(EdgeBook.model_fields, self.call(self.contract.functions.edgeBook(task_id, edge)))))

    def log_hash(self, task_id: int, edge: int) -> bytes:
        return bytes(self.call(self.contract.functions.logHash(task_id, edge)))

    def voided(self, task_id: int, edge: int, log_index: int, vehicle: int) -> bool:
        return bool(self.call(self.contract.functions.voided(task_id, edge, log_index, vehicle)))

    def settled_theta(self, task_id: int, edge: int, vehicle: int) -> int:
        return int(self.call(self.contract.functions.settledTheta(task_id, edge, vehicle)))

    def payout_for(self, task_id: int, edge: int, theta: int) -> int:
        """The contract's payout for ``theta`` summed θ at ``edge``."""
        return int(self.call(self.contract.functions.payoutFor(task_id, edge, theta)))

    def owed(self, account: str) -> int:
        """Wei ``account`` can claim."""
        return int(self.call(self.contract.functions.owed(account)))

    def recorded_rounds(self, task_id: int, from_block: int = 0, **filters: int) -> list[RecordedRound]:
        """Every ``recordRound`` of the task (optionally of one ``edge`` / ``round``), in chain
        order, with its records read back from the transaction's calldata."""
        out = []
        for ev in self.events("RoundRecorded", from_block, taskId=task_id, **filters):
            packed = self._packed_records(ev.tx_hash)
            out.append(
                RecordedRound(
                    edge=ev.edge, round=ev.round, preliminary_digest=_raw(ev.preliminaryDigest),  # type: ignore[attr-defined]
                    preliminary_cid=ev.preliminaryCid, samples=ev.samples, tx_hash=ev.tx_hash,  # type: ignore[attr-defined]
                    manifest_cid=ev.manifestCid,  # type: ignore[attr-defined]
                    entry=RoundLog(round=ev.round, root=_raw(ev.recordsRoot), count=ev.count, theta_total=ev.thetaTotal),  # type: ignore[attr-defined]
                    records=[packed[i : i + RECORD_BYTES] for i in range(0, len(packed), RECORD_BYTES)],
                )  # fmt: skip
            )
        return out

    def _packed_records(self, tx_hash: str) -> bytes:
        """The records argument of one mined ``recordRound`` transaction, read from the node
        once per client (calldata never changes): an edge reads every earlier record of its
        task at each close, so without this each close costs one read per recorded round.
        The most recently used, up to :data:`CALLDATA_KEPT` bytes, are kept."""
        with self._calldata_lock:
            if tx_hash in self._calldata:
                self._calldata.move_to_end(tx_hash)
                return self._calldata[tx_hash]
        tx = self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        _, args = self.contract.decode_function_input(tx["input"])
        packed = bytes(args["records"])
        with self._calldata_lock:
            if tx_hash not in self._calldata:  # another thread may have read it meanwhile
                self._calldata[tx_hash] = packed
                self._calldata_bytes += len(packed)
            while self._calldata_bytes > CALLDATA_KEPT:
                self._calldata_bytes -= len(self._calldata.popitem(last=False)[1])
        return packed


def _raw(hex0x: str) -> bytes:
    return bytes.fromhex(hex0x.removeprefix("0x"))
