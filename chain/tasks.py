"""Typed client of ``BMFLTasks``: tasks, rounds, records, cross-evaluation, payouts and claims."""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from bmfl.incentives import SCALE
from bmfl.protocol.schemas import TaskDraft
from bmfl.rounds import target_fixed
from chain.base import ChainEvent, ContractClient, Receipt

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
    initial_model_digest: bytes = Field(min_length=32, max_length=32)
    initial_model_cid: str = ""
    test_set_digest: bytes = Field(min_length=32, max_length=32)

    def as_tuple(self) -> tuple[object, ...]:
        """ABI tuple of ``BMFLTasks.TaskParams``."""
        return (
            self.block_reward, self.category, self.max_rounds, self.target_accuracy, self.round_duration,
            self.initial_model_digest, self.initial_model_cid, self.test_set_digest,
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
    value), the one mapping the publisher sends and the cloud checks the chain against;
    raises pydantic's ``ValidationError`` (a ``ValueError``) for a draft the contract cannot hold."""
    return TaskParams(
        block_reward=draft.block_reward_wei, category=draft.category, max_rounds=draft.rounds,
        target_accuracy=target_fixed(draft.target_accuracy), round_duration=draft.round_duration_s,
        initial_model_digest=initial_model_digest, initial_model_cid=initial_model_cid, test_set_digest=test_set_digest,
    )  # fmt: skip


class TrainerRecord(_Frozen):
    """One trainer in an edge's round record; a malicious trainer has ``theta`` 0."""

    vehicle: int = Field(ge=0, lt=2**32)
    update_digest: bytes = Field(min_length=32, max_length=32)
    reliability: int = Field(ge=-(2**63), lt=2**63)
    theta: int = Field(ge=0, lt=2**64)
    malicious: bool = False

    def pack(self) -> bytes:
        """The record's 53 packed bytes (``BMFLTasks.RECORD_BYTES``)."""
        return (
            self.vehicle.to_bytes(4, "big") + self.update_digest + self.reliability.to_bytes(8, "big", signed=True)
            + self.theta.to_bytes(8, "big") + bytes([self.malicious])
        )  # fmt: skip


RECORD_BYTES = 53


def pack_records(records: list[TrainerRecord]) -> bytes:
    """Records sorted by vehicle (neighbours share storage slots) and packed for ``recordRound``."""
    return b"".join(r.pack() for r in sorted(records, key=lambda r: r.vehicle))


def unpack_records(packed: bytes | str) -> list[TrainerRecord]:
    """Decode the ``records`` bytes of ``recordRound`` / ``RoundRecorded``."""
    raw = bytes.fromhex(packed.removeprefix("0x")) if isinstance(packed, str) else packed
    if len(raw) % RECORD_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte records")
    out = []
    for off in range(0, len(raw), RECORD_BYTES):
        rec = raw[off : off + RECORD_BYTES]
        out.append(
            TrainerRecord(
                vehicle=int.from_bytes(rec[:4], "big"), update_digest=rec[4:36],
                reliability=int.from_bytes(rec[36:44], "big", signed=True),
                theta=int.from_bytes(rec[44:52], "big"), malicious=rec[52] != 0,
            )  # fmt: skip
        )
    return out


class TaskInfo(_Frozen):
    """A task's on-chain state (field order of ``BMFLTasks.Task``)."""

    status: Status
    phase: Phase
    round: int
    max_rounds: int
    deadline: int
    recorded_edges: int
    scored_edges: int
    publisher: str
    category: int
    round_duration: int
    target_accuracy: int
    escrow: int
    block_reward: int
    last_accuracy: int
    test_set_digest: bytes
    initial_model_digest: bytes


class RoundResult(_Frozen):
    """A finalized round."""

    global_digest: bytes
    accuracy: int
    leader: int


class EdgeTally(_Frozen):
    """What an edge accumulated over a task (its contributions: :meth:`TasksClient.edge_contribution`)."""

    accuracy_sum: int
    rounds_led: int
    rounds_recorded: int


class TasksClient(ContractClient):
    """``BMFLTasks``; each method sends from the client's ``sender`` (see :meth:`as_sender`)."""

    artifact = "BMFLTasks"

    # publisher
    def create_task(self, params: TaskParams, escrow_wei: int) -> tuple[int, Receipt]:
        """Create a task escrowing ``escrow_wei``; returns its id."""
        receipt = self.send(self.contract.functions.createTask(params.as_tuple()), value=escrow_wei)
        return int(receipt.event("TaskCreated").taskId), receipt  # type: ignore[attr-defined]

    def cancel_task(self, task_id: int) -> Receipt:
        """Cancel a stalled task (anyone); the unspent escrow becomes the publisher's."""
        return self.send(self.contract.functions.cancelTask(task_id))

    # cloud
    def start_round(self, task_id: int, global_digest: bytes, global_cid: str) -> Receipt:
        """Cloud: start the next round from the global model."""
        return self.send(self.contract.functions.startRound(task_id, global_digest, global_cid))

    def finalize_round(self, task_id: int, global_digest: bytes, global_cid: str, accuracy: int) -> Receipt:
        """Cloud: elect the leader and record the new global model and its accuracy."""
        return self.send(self.contract.functions.finalizeRound(task_id, global_digest, global_cid, accuracy))

    def finish_task(self, task_id: int) -> Receipt:
        """Compute and credit every payout (anyone, once the stop condition holds)."""
        return self.send(self.contract.functions.finishTask(task_id))

    # edges
    def commit_trainers(self, task_id: int, vehicles: list[int]) -> Receipt:
        """Edge: commit the selected trainers (registry indices) of the current round."""
        return self.send(self.contract.functions.commitTrainers(task_id, vehicles))

    def record_round(
        self, task_id: int, preliminary_digest: bytes, preliminary_cid: str, samples: int, records: list[TrainerRecord]
    ) -> Receipt:
        """Edge: record the round in one call."""
        fn = self.contract.functions.recordRound(
            task_id, preliminary_digest, preliminary_cid, samples, pack_records(records)
        )
        return self.send(fn)

    def submit_scores(self, task_id: int, scores: list[int]) -> Receipt:
        """Edge: test-set scores of every edge's preliminary model (index = edge index)."""
        return self.send(self.contract.functions.submitScores(task_id, scores))

    # payees
    def claim(self) -> Receipt:
        """Withdraw everything the sender is owed."""
        return self.send(self.contract.functions.claim())

    # views
    def task_count(self) -> int:
        """Tasks created so far (ids 1..count)."""
        return int(self.call(self.contract.functions.taskCount()))

    def task(self, task_id: int) -> TaskInfo:
        """The task's state."""
        fields = self.call(self.contract.functions.task(task_id))
        return TaskInfo(**dict(zip(TaskInfo.model_fields, fields)))

    def round_result(self, task_id: int, round_: int) -> RoundResult:
        """A finalized round's global digest, accuracy and leader."""
        return RoundResult(**dict(zip(RoundResult.model_fields, self.call(self.contract.functions.roundResult(task_id, round_)))))

    def edge_tally(self, task_id: int, edge: int) -> EdgeTally:
        """An edge's totals in the task."""
        return EdgeTally(**dict(zip(EdgeTally.model_fields, self.call(self.contract.functions.edgeTally(task_id, edge)))))

    def contribution(self, task_id: int, edge: int, vehicle: int) -> int:
        """C_{m,ℓ}: summed θ of ``vehicle`` at ``edge``."""
        return int(self.call(self.contract.functions.contribution(task_id, edge, vehicle)))

    def edge_contribution(self, task_id: int, edge: int) -> int:
        """Σ_m C_{m,ℓ}: summed θ of every vehicle at ``edge``."""
        return int(self.call(self.contract.functions.edgeContribution(task_id, edge)))

    def trainer_status(self, task_id: int, round_: int, vehicle: int) -> tuple[bool, bool]:
        """(selected, recorded) of ``vehicle`` in the round."""
        selected, recorded = self.call(self.contract.functions.trainerStatus(task_id, round_, vehicle))
        return bool(selected), bool(recorded)

    def owed(self, account: str) -> int:
        """Wei ``account`` can claim."""
        return int(self.call(self.contract.functions.owed(account)))
