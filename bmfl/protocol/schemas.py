"""REST schemas shared by the cloud, the edges, the vehicles and the publisher client.
The task itself is the core's one vocabulary (``bmfl.task``), re-exported here.

Addresses are checksummed 0x-hex strings, digests 0x-hex sha2-256, accuracies floats
in [0, 1] (the chain stores them ×10⁶, ``bmfl.incentives.to_fixed``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bmfl.task import MAX_TASK_ID, AggregationSpec, RuleSpec, TaskDraft, TaskSpec, TrainingSpec  # noqa: F401 (re-exported)

MAX_ROUND = 2**16 - 1
"""Largest round (``uint16`` on chain)."""

Hex32 = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
Address = Field(pattern=r"^0x[0-9a-fA-F]{40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- cloud → edge


class EdgeTask(_Strict):
    """What the cloud tells the edges about a task (the test set travels beside it)."""

    spec: TaskSpec
    test_set_digest: str = Hex32


class RoundOpen(_Strict):
    global_cid: str
    global_digest: str = Hex32


class RoundSelection(_Strict):
    task_id: int
    round: int
    edge: int
    selected: list[int] = Field(description="registry indices of the vehicles this edge selected (or was handed over)")


class RoundProgress(_Strict):
    task_id: int
    round: int
    edge: int
    phase: Literal["open", "closed", "scored"]
    selected: list[int]
    received: list[int]


class TrainerOutcome(_Strict):
    vehicle: int
    address: str
    digest: str
    reliability: float
    theta: float
    malicious: bool
    epsilon: float | None
    upload_bytes: int = Field(0, ge=0, description="size of the update blob the edge received")


class RoundClose(_Strict):
    task_id: int
    round: int
    edge: int
    recorded: bool = Field(description="the edge recorded the round on chain (with no records when no update arrived)")
    preliminary_cid: str | None = None
    preliminary_digest: str | None = None
    samples: int = 0
    trainers: list[TrainerOutcome] = Field(default_factory=list)


class ScoreRequest(_Strict):
    preliminaries: dict[int, str] = Field(description="edge index → preliminary model CID")


class ScoreResult(_Strict):
    edge: int
    scores: list[float] = Field(description="test-set score per edge index (0 if unrecorded)")


class EvaluateRequest(_Strict):
    cid: str


class EvaluateResult(_Strict):
    edge: int
    accuracy: float | None
    loss: float


# ---------------------------------------------------------------- vehicles


class AssociateRequest(_Strict):
    vehicle: str = Address
    x: float = Field(ge=-1e7, le=1e7)
    y: float = Field(ge=-1e7, le=1e7)
    timestamp_ms: int = Field(ge=0)
    signature: str
    previous_edge: str | None = Field(None, description="the edge this vehicle leaves (handover)")


class Association(_Strict):
    vehicle: str
    vehicle_index: int
    edge: str
    edge_index: int
    released_by_previous: bool | None = None


class Assignment(_Strict):
    task_id: int
    round: int
    selected: bool
    open: bool = Field(description="uploads are accepted for this round")
    global_cid: str | None
    global_digest: str | None
    deadline: int | None = Field(None, description="unix time after which the chain refuses this round's records")
    model: str
    training: TrainingSpec
    edge: str


class UploadReceipt(_Strict):
    task_id: int
    round: int
    vehicle: int
    digest: str
    cid: str
    signature: str = Field(description="the edge's EIP-191 signature of receipt_message: its promise to record the update")


class EdgeInfo(_Strict):
    index: int
    address: str
    url: str
    x: float
    y: float


class Problem(BaseModel):
    """Body of every 4xx/5xx: a machine-readable ``reason`` and a human ``detail``."""

    reason: str
    detail: str
