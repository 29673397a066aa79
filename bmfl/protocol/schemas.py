"""REST schemas shared by the cloud, the edges, the vehicles and the publisher client.

Addresses are checksummed 0x-hex strings, digests 0x-hex sha2-256, accuracies floats
in [0, 1] (the chain stores them ×10⁶, ``bmfl.incentives.to_fixed``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bmfl.aggregation import Aggregator, compose, get_aggregator
from bmfl.filters import Evaluator, get_filter
from bmfl.training import LocalTrainingConfig

MAX_TASK_ID = 2**63 - 1
"""Largest task id the services accept (SQLite's INTEGER; the chain counts from 1)."""
MAX_ROUND = 2**16 - 1
"""Largest round (``uint16`` on chain)."""

Hex32 = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
Address = Field(pattern=r"^0x[0-9a-fA-F]{40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingSpec(_Strict):
    """Local training every trainer runs (BMFL Algorithm 1)."""

    epochs: int = Field(2, ge=1, le=100, description="E, local epochs per round")
    batch_size: int = Field(64, ge=1, le=4096, description="B, expected batch size")
    lr: float = Field(0.3, gt=0, le=10, description="η, learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="β, momentum")
    dp: bool = Field(True, description="differentially private training")
    clip: float = Field(1.0, gt=0, description="C, per-sample clipping norm")
    noise_multiplier: float = Field(1.0, ge=0, description="σ: noise std σ·C")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ at which vehicles report ε")
    sampling: Literal["poisson", "fixed"] = Field("poisson", description="batch sampling")

    def local(self) -> LocalTrainingConfig:
        return LocalTrainingConfig(**self.model_dump())


SELF_RELIABILITY_TOLERANCE = 25.0
"""Default margin of the self-reliability filter in tasks. An honest DP-SGD upload in
round 1 changes the freshly initialised CNN by a relative squared distance D of about
1 (160 samples, E = 2, η = 0.3) to 21 (800 samples), so the filter's benchmark default
(1.0) would reject honest vehicles with more data; sign-flipped uploads have D = ∞ and
same-value ones D ≈ 10⁶, far above 25."""


class RuleSpec(_Strict):
    name: str = Field(description="registry name")
    options: dict[str, Any] = Field(default_factory=dict)


class AggregationSpec(_Strict):
    """Filters then rule at each edge (BMFL §IV-C), FedAvg by data at the cloud (Eq. 3)."""

    edge: RuleSpec = Field(default_factory=lambda: RuleSpec(name="reweight"))
    filters: list[RuleSpec] = Field(
        default_factory=lambda: [RuleSpec(name="self_reliability", options={"tolerance": SELF_RELIABILITY_TOLERANCE})],
        description="filters run in order before the rule",
    )
    cloud: RuleSpec = Field(default_factory=lambda: RuleSpec(name="fedavg"))

    def edge_rule(self, evaluate: Evaluator) -> Aggregator:
        """The edge's aggregator; filters that score on the test set get ``evaluate``."""
        filters = [
            get_filter(f.name, **({"evaluate": evaluate} if f.name == "self_reliability" else {}), **f.options)
            for f in self.filters
        ]
        return compose(get_aggregator(self.edge.name, **self.edge.options), *filters)

    def cloud_rule(self) -> Aggregator:
        return get_aggregator(self.cloud.name, **self.cloud.options)


class TaskDraft(_Strict):
    """A publisher's task before it is escrowed on chain. The escrow, rounds, target,
    category and round duration go on chain too (``createTask``) and must match."""

    model: str = Field("bmfl_cnn", description="model registry name")
    category: int = Field(1, gt=0, lt=2**32, description="data category bitmask vehicles must match")
    rounds: int = Field(10, ge=1, lt=2**16, description="K, maximum rounds")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once reached")
    fraction: float = Field(1.0, gt=0, le=1, description="V, fraction of associated vehicles selected")
    reward_wei: int = Field(gt=0, description="ρ_total, the escrow")
    block_reward_wei: int = Field(ge=0, description="ρ_b, the leader's reward per round")
    round_duration_s: int = Field(600, gt=0, description="seconds each round step may take on chain")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    seed: int = Field(0, description="seeds trainer selection")


class TaskSpec(TaskDraft):
    """A published task: the draft with the id ``createTask`` returned."""

    task_id: int = Field(ge=1, le=MAX_TASK_ID, description="id returned by BMFLTasks.createTask")


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
    selected: list[int] = Field(description="registry indices committed on chain")


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


class RoundClose(_Strict):
    task_id: int
    round: int
    edge: int
    recorded: bool = Field(description="false when no update arrived")
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
