"""The one vocabulary of a BMFL task: what a publisher posts over REST, what the
contracts' client escrows (``chain.tasks``), what edges and vehicles run, and what the
simulator's config embeds (``bmfl.simulation.config.SimulationConfig`` adds only fleet
size, data, partition, attacks and mobility).

Every default is stated once, here (docs/algorithms.md gives the maths): the platform's
defaults move a freshly initialised model in a few rounds on small local datasets.
``PAPER_TRAINING`` is the BMFL paper's setting (§V-B), kept for reproduction;
``PRESETS`` names starting points (the measured private one, the paper's) that a
publisher's own fields override.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from bmfl.training.local import LocalTrainingConfig

MAX_TASK_ID = 2**63 - 1
"""Largest task id the services accept (SQLite's INTEGER; the chain counts from 1)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputDPSpec(_Strict):
    """Local DP on inputs (BAFDP, seed ``000``; ``bmfl.privacy.input_dp``): once, each
    vehicle clips every sample's vector to L2 ≤ C_x and adds N(0, σ_x² C_x²), kept."""

    sigma: float = Field(gt=0, description="σ_x: the noise std is σ_x·C_x (the noise multiplier of the release)")
    clip: float = Field(gt=0, description="C_x, the L2 bound of each sample's vector")
    targets: bool = Field(
        False, description="perturb (x, y) together (regression only); false: features only, labels stay exact"
    )


class TrainingSpec(_Strict):
    """Local training every trainer runs (BMFL Algorithm 1, DP-SGD), with optional
    local DP on its inputs."""

    epochs: int = Field(2, ge=1, le=100, description="E, local epochs per round")
    batch_size: int = Field(64, ge=1, le=4096, description="B, expected batch size")
    lr: float = Field(0.3, gt=0, le=10, description="η, learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="β, momentum")
    dp: bool = Field(True, description="differentially private training")
    clip: float = Field(1.0, gt=0, description="C, per-sample clipping norm")
    noise_multiplier: float = Field(1.0, ge=0, description="σ: the noise std is σ·C")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ at which vehicles report ε")
    sampling: Literal["poisson", "fixed"] = Field(
        "poisson", description="batch sampling; DP needs poisson (fixed-size batches are refused with dp)"
    )
    accountant: Literal["rdp", "pld"] = Field("rdp", description="privacy accountant")
    max_steps: int | None = Field(
        None, ge=1, description="cap on local steps per round (local iterations); None = E full epochs (the paper)"
    )
    max_sampling_rate: float = Field(
        1.0, ge=0.01, le=1,
        description="q_max: cap on each sample's chance to be in a Poisson batch, q = min(1, B/n, q_max); below 1 a "
        "vehicle with fewer than B/q_max samples keeps amplification by sampling (an epoch is then ⌈1/q_max⌉ steps of "
        "q_max·n samples, at most 100 steps); 1 = the paper's q = min(1, B/n)",
    )  # fmt: skip
    target_epsilon: float | None = Field(
        None, gt=0,
        description="ε at δ each vehicle may spend over the task's rounds: σ is derived from it (bmfl.privacy.calibrate); "
        "a task stating σ too is refused unless σ spends between 99 % and 100 % of it; None = σ as stated",
    )  # fmt: skip
    input_dp: InputDPSpec | None = Field(
        None, description="local DP on inputs before any training (its ε composes with DP-SGD's); None = off"
    )
    plan_samples: int | None = Field(
        None, ge=1,
        description="with target_epsilon: the local dataset size σ is planned for (the smallest a vehicle trains on; a "
        "vehicle with less spends more, and its own ε budget stops it); None: σ is planned for every size, which needs "
        "max_steps; the simulator plans for its vehicles' sizes",
    )  # fmt: skip

    @model_validator(mode="after")
    def _dp_is_accountable(self) -> "TrainingSpec":
        """The accountant covers Poisson sampling only (``bmfl.training.refuse_unsound``)."""
        if self.dp and self.sampling != "poisson":
            raise ValueError("fixed_batches_with_dp: DP training needs sampling = 'poisson'")
        if self.target_epsilon is not None and not self.dp:
            raise ValueError("target_epsilon_without_dp: a target ε needs dp = true")
        if self.target_epsilon is not None and self.input_dp is not None:
            raise ValueError("target_epsilon_with_input_dp: σ is planned for DP-SGD alone; state σ with input_dp")
        return self

    def local(self) -> "LocalTrainingConfig":
        """The core training call's parameters."""
        from bmfl.training.local import LocalTrainingConfig

        return LocalTrainingConfig(**self.model_dump(exclude={"accountant", "target_epsilon", "plan_samples", "input_dp"}))

    def plans(self, rounds: int, sizes: Iterable[int]) -> set[tuple[float, int]]:
        """Each vehicle's privacy plan over ``rounds`` rounds on a local dataset of each
        of ``sizes``: (q, ``rounds`` × its round's steps) (``bmfl.training.round_plan``)."""
        from bmfl.training.local import round_plan  # torch: on use

        local = self.local()
        return {(p.sampling_rate, rounds * p.steps) for p in (round_plan(local, n) for n in sizes)}

    def every_size(self) -> list[int]:
        """Local dataset sizes whose plans bound every size's (``max_steps`` set): n = 1
        and the first n of each ⌈n/B⌉ = k up to k = ⌈max_steps/E⌉. Within one k the
        steps are the same and q = min(1, B/n, q_max) is largest at the first n, where
        q_max binds the plan is that of n = 1, and beyond k the steps stay at ``max_steps``
        while q falls; ε grows in both q and the steps."""
        if self.max_steps is None:
            raise ValueError("target_epsilon_needs_plan_samples: without max_steps the steps grow with the dataset; state "
                             "the local dataset size σ is planned for (plan_samples), or max_steps")  # fmt: skip
        last = -(-self.max_steps // self.epochs)
        return [1] + [(k - 1) * self.batch_size + 1 for k in range(2, last + 1)]

    def epsilon(self, rounds: int, sizes: Iterable[int]) -> float:
        """The largest ε at δ that training with this spec spends over ``rounds`` rounds
        on local datasets of ``sizes`` (the accountant alone: nothing is trained)."""
        from bmfl.privacy.calibrate import epsilon_of

        return epsilon_of(self.noise_multiplier, self.plans(rounds, sizes), self.delta, self.accountant)

    def calibrated(self, rounds: int, sizes: Iterable[int]) -> "TrainingSpec":
        """This spec with σ derived from ``target_epsilon`` for ``rounds`` rounds on local
        datasets of ``sizes`` (each vehicle's plan: ``rounds`` × its round's steps at its
        q, ``bmfl.training.round_plan``); itself without a target. A stated σ must
        agree: spend between (1 − RTOL) and 1 times the target, else ValueError
        ``sigma_disagrees_with_target_epsilon``."""
        if self.target_epsilon is None:
            return self
        from bmfl.privacy.calibrate import (  # torch and dp-accounting: on use
            RTOL,
            calibrate_sigma,
            epsilon_of,
        )

        plans = self.plans(rounds, sizes)
        if "noise_multiplier" not in self.model_fields_set:
            sigma = calibrate_sigma(self.target_epsilon, self.delta, plans, self.accountant)
            return self.model_copy(update={"noise_multiplier": sigma})
        spent = epsilon_of(self.noise_multiplier, plans, self.delta, self.accountant)
        if not (1 - RTOL) * self.target_epsilon <= spent <= self.target_epsilon:
            raise ValueError(
                f"sigma_disagrees_with_target_epsilon: σ = {self.noise_multiplier:g} spends ε = {spent:.4g} over the "
                f"planned steps, target {self.target_epsilon:g}; state σ or target_epsilon, not both"
            )
        return self


PAPER_TRAINING = TrainingSpec(epochs=5, batch_size=64, lr=0.01, momentum=0.9, noise_multiplier=2.0)
"""BMFL §V-B: E = 5, B = 64, η = 0.01, β = 0.9, C = 1, σ = 2, δ = 1e-5."""

DEFAULT_RATCHET = 0.05
"""The ratchet's tolerance in a new task's default aggregation and the ``private`` preset:
a global model may score at most 5 points below the best one so far (chosen from
docs/robustness.md, docs/algorithms.md §8.8)."""

CREDIT = (-1.0, 2.0)
"""Leave-out testing's ``credit`` in the ``private_credit`` preset, as docs/robustness.md
and docs/robustness_credit.md measure it (docs/algorithms.md §8.11): a kept upload weighs
nothing at a help score of −1 or less and all of its weight from 2 (a free rider, at
about 0, keeps a third)."""


PRESETS: dict[str, dict[str, Any]] = {
    "private": {
        "model": "scatter_linear",
        "training": {"epochs": 1, "max_steps": 3, "lr": 0.6, "momentum": 0.5, "max_sampling_rate": 0.25, "target_epsilon": 8.0},
        "aggregation": {
            "filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False, "centre": "majority_mean"}},
                        {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5}}],
            "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.9},
            "ratchet": DEFAULT_RATCHET,
            "standing": {},
        },
    },
    "private_long": {
        "model": "scatter_linear",
        "training": {"epochs": 1, "max_steps": 1, "batch_size": 256, "lr": 0.6, "momentum": 0.5, "max_sampling_rate": 0.1,
                     "target_epsilon": 8.0},
        "aggregation": {
            "filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False}},
                        {"name": "dp_self_reliability", "options": {"tolerance": 1.0}}],
            "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.5, "schedule": "cosine"},
        },
    },
    "paper": {
        "training": PAPER_TRAINING.model_dump(exclude_unset=True),
        "aggregation": {"edge": {"name": "reweight"}, "filters": [{"name": "self_reliability"}]},
    },
}
"""Named starting points for a task's fields. ``private``: the best point measured in
the demo's setting at ε = 8, δ = 1e-5 (docs/demo_defaults.md): for 28 × 28 one-channel
images, a linear model on fixed scattering features (``scatter_linear``), 3 DP-SGD steps
of B = 64 a round at q ≤ 0.25, FedAvgM (β₁ = 0.9) behind the rollback guard at the
cloud (``ratchet``, :data:`DEFAULT_RATCHET`), and at the edges the default pipeline
(``AggregationSpec``: the DP envelope, the signal median, leave-out testing judged at a
fifth of the step, inverse-noise averaging); σ derived from the
target for the task's rounds and ``plan_samples``. ``private_long``: the best
point of the 80-round frontier at ε = 8 (docs/frontier.md; 0.92 on complete non-IID
and on Dirichlet(0.9) MNIST-10k, where the best earlier settings ended at 0.875 and
0.844): one DP-SGD step a round of B = 256 at q ≤ 0.1 (σ derived for a third of the
steps), FedAvgM (β₁ = 0.5) whose step decays over the rounds (cosine), and the signal
median measured from the geometric median, as those figures were (not yet re-measured
with the majority mean, docs/algorithms.md §8.4). Over the demo's 8 rounds one step a
round ends lower than ``private``'s three (0.81–0.88 against 0.91,
docs/demo_defaults.md), so it is meant for tasks of tens of rounds; on Fashion-MNIST's
60,000 images it ends below the 3-step training (0.808 against 0.823,
docs/paper_scale.md). ``private_leave_out``: ``private`` with leave-out testing judged
at the edge's full step (docs/algorithms.md §8.6): for tasks whose vehicles hold a mix
of classes and that expect colluding attackers who know the defence (on Dirichlet(0.9)
data it keeps 0.99 / 0.95 of the clean accuracy against the median-aware attack at
20 / 40 %, where ``private`` keeps 0.83 / 0.62; the white-box one 0.95 / 0.67 against
0.64 / 0.53), at the price of flagging honest vehicles whose data cover one corner of
the classes (about 8 % of uploads when every vehicle holds two classes).
``private_credit``: ``private`` with each kept upload weighed and paid by the help the
test set measures (leave-out testing's ``credit``, :data:`CREDIT`, docs/algorithms.md
§8.11): for tasks whose vehicles hold a mix of classes (on Dirichlet(0.9) data it keeps
≥ 0.92 of the clean accuracy under every attack of docs/robustness.md at 20 and 40 %,
label flipping at 40 % 0.93 where ``private`` keeps 0.70, and gives free riders a third
of their weight), at a cost where every vehicle holds two classes (clean accuracy 0.850
against 0.865, more honest uploads flagged). ``paper``: the
BMFL paper's training and edge pipeline (the self-reliability filter without the DP
envelope)."""


def with_preset(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """TaskDraft fields: ``fields`` over preset ``name``, sections merged key by key."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: one of {sorted(PRESETS)}")
    return merge(PRESETS[name], fields)


PRESETS["private_leave_out"] = with_preset("private", {"aggregation": {"filters": [
    {"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False, "centre": "majority_mean"}},
    {"name": "leave_out"},
], "ratchet": None, "standing": None}})  # fmt: skip
PRESETS["private_credit"] = with_preset("private", {"aggregation": {"filters": [
    *PRESETS["private"]["aggregation"]["filters"][:-1],
    {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5, "credit": list(CREDIT)}},
]}})  # fmt: skip


class RuleSpec(_Strict):
    """An aggregation rule or an update filter by registry name, with its options."""

    name: str = Field(description="registry name (bmfl.aggregation / bmfl.filters)")
    options: dict[str, Any] = Field(default_factory=dict, description="constructor options")

    def label(self) -> str:
        """``name``, or ``name(option=value, …)`` with the options sorted."""
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in sorted(self.options.items()))})" if self.options else "")


class ServerSpec(_Strict):
    """The cloud's server-side optimiser over the pseudo-gradient w^{r−1} − a^r
    (``bmfl.aggregation.server``; Reddi et al. 2021). ``paper``: w^r = a^r."""

    name: Literal["paper", "fedavgm", "fedadam", "fedyogi"] = Field("paper", description="server optimiser")
    lr: float = Field(1.0, gt=0, le=100, description="η, server learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="β₁, momentum of the pseudo-gradient")
    beta2: float = Field(0.99, ge=0, lt=1, description="β₂, decay of its second moment (fedadam, fedyogi)")
    tau: float = Field(1e-3, gt=0, description="τ, adaptivity (fedadam, fedyogi)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="η over the task's planned rounds: constant, or cosine decay from η towards 0 in the last round"
    )

    @model_validator(mode="after")
    def _schedule_needs_a_step(self) -> "ServerSpec":
        if self.schedule != "constant" and self.name == "paper":
            raise ValueError("schedule_without_server_optimiser: 'paper' takes the aggregate as is; name an optimiser")
        return self


class StandingSpec(_Strict):
    """Leave-out testing's evidence carried across rounds (``bmfl.rounds.standing``,
    docs/algorithms.md §8.10): each vehicle's one-sided cumulative sum of its clipped
    leave-out scores over the task, at any edge, S = max(0, S + clip(x, −relief, cap) −
    drift); a vehicle whose S exceeds ``limit`` is barred at every edge, and each round it
    serves barred counts as a score of 0."""

    drift: float = Field(0.5, gt=0, le=10, description="k, the score a round may add without the standing growing")
    relief: float = Field(1.0, ge=0, le=100, description="the most one round's score may take off the standing")
    cap: float = Field(3.0, gt=0, le=100, description="the most one round's score may add to the standing (before the drift)")
    limit: float = Field(5.0, gt=0, le=1000, description="h, the standing above which the vehicle is barred")

    @model_validator(mode="after")
    def _cap_above_drift(self) -> "StandingSpec":
        if self.cap <= self.drift:
            raise ValueError("standing_cap_below_drift: a round could never raise a standing")
        return self


class AggregationSpec(_Strict):
    """Filters then rule at each edge (BMFL §IV-C), then the cloud's rule over the
    edges' preliminary models (FedAvg by data, Eq. 3). The default runs the DP envelope,
    the signal median (distances from the majority mean), then leave-out testing on the
    publisher's test set judged at a fifth of the step (half the step after a round the
    cloud's guard refused, the full step after two in a row, §8.9), and averages what they keep by
    the precision of each upload's DP noise (chosen from the robustness matrices,
    docs/robustness_leave_out.md and docs/robustness_leave_out_complete.md, §8.3). The
    cloud's rollback guard (``ratchet``, §8.8) and the vehicles' standings at their edges
    (``standing``, §8.10) are off in a spec built from fields, so a recorded configuration
    keeps its meaning; a new task's default aggregation (``TaskDraft.aggregation``) and the
    ``private`` preset run the guard at :data:`DEFAULT_RATCHET` and the standings at
    :class:`StandingSpec`'s defaults."""

    edge: RuleSpec = Field(
        default_factory=lambda: RuleSpec(name="noise_weighted"),
        description="edge (first) rule (default: inverse-noise averaging, which bounds what a declared data size buys; "
        "the paper's rule is reweight)",
    )
    filters: list[RuleSpec] = Field(
        default_factory=lambda: [RuleSpec(name="dp_envelope"),
                                 RuleSpec(name="signal_median", options={"clip": False, "centre": "majority_mean"}),
                                 RuleSpec(name="leave_out", options={"step": 0.2, "escalation": 2.5})],
        description="update filters every edge runs, in order, before its rule (default: the DP envelope, the signal "
        "median, then leave-out testing on the publisher's test set at a fifth of the step, growing 2.5-fold after each "
        "round in a row the cloud's guard refused; the paper's pipeline is the self-reliability filter alone)",
    )
    ratchet: float | None = Field(
        None, ge=0, le=1,
        description="the cloud's rollback guard (docs/algorithms.md §8.8): a round's global model stands only if its "
        "accuracy on the test set is at most this much below the best global model's so far, else the round's global "
        "model is that best one; synchronous rounds (asynchronous ones ignore it); None: off (a task that leaves its "
        "aggregation unset, and the private preset, run it at DEFAULT_RATCHET = 0.05)",
    )  # fmt: skip
    standing: StandingSpec | None = Field(
        None,
        description="the edges bar a vehicle whose leave-out scores over the task add up to more than single "
        "rounds' harm can explain, until its standing has fallen back by the drift a barred round "
        "(docs/algorithms.md §8.10; needs the leave_out filter, last; synchronous rounds "
        "with DP training, which the scores are measured in: other tasks ignore it, as asynchronous ones the ratchet); "
        "None: off",
    )  # fmt: skip
    cloud: RuleSpec = Field(default_factory=lambda: RuleSpec(name="fedavg"), description="cloud (second) rule")
    server: ServerSpec = Field(default_factory=ServerSpec, description="the cloud's server optimiser over its rule's aggregate")

    @model_validator(mode="after")
    def _standing_needs_leave_out(self) -> "AggregationSpec":
        if self.standing is not None and (not self.filters or self.filters[-1].name != "leave_out"):
            raise ValueError(
                "standing_without_leave_out: a standing adds up the scores of the leave_out filter, which must run last"
            )
        return self

    def describe(self) -> str:
        """``filter+…+edge rule[+standing] / cloud rule[+server optimiser][+ratchet(tolerance)]``, for logs and plot titles."""
        server = "" if self.server.name == "paper" else f"+{self.server.name}"
        server += "" if self.server.schedule == "constant" else f"({self.server.schedule})"
        server += "" if self.ratchet is None else f"+ratchet({self.ratchet:g})"
        edge = [f.name for f in self.filters] + [self.edge.name] + (["standing"] if self.standing is not None else [])
        return "+".join(edge) + f" / {self.cloud.name}{server}"


class AsyncSpec(_Strict):
    """Asynchronous rounds with bounded staleness (BAFDP, seed ``000``;
    docs/algorithms.md, "Asynchronous rounds"): the aggregator applies a buffer of S
    reports (or what arrived before ``timeout_s``); a report whose base version is more
    than ``tau_max`` versions old is refused as ``stale``."""

    mode: Literal["sync", "async"] = Field("sync", description="sync: lock-step rounds; async: buffered updates")
    buffer_size: int | None = Field(
        None, ge=1, description="S, reports per global update; None = every participating vehicle"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="apply a non-empty buffer this long after the previous update; None = wait for S"
    )
    tau_max: int = Field(4, ge=0, description="τ_max: reports older than this many versions are refused")
    weighting: Literal["fedasync", "fedbuff"] = Field(
        "fedbuff",
        description="fedasync: mix w ← (1−ᾱ)w + ᾱ·agg with ᾱ = α·mean (τ+1)^(−a) (Xie et al. 2019); fedbuff: "
        "w ← w + η_g·(agg − w) over deltas rebased on w, each scaled by (τ+1)^(−a) (Nguyen et al. 2022)",
    )
    alpha: float = Field(0.6, gt=0, le=1, description="fedasync: α, the mixing rate of a fresh report")
    exponent: float = Field(
        0.5, ge=0, description="a in (τ+1)^(−a): fedasync's polynomial staleness; fedbuff's delta scaling (0 = plain mean)"
    )
    server_lr: float = Field(1.0, gt=0, description="fedbuff: η_g, the server learning rate")

    @property
    def reach(self) -> int:
        """How many versions back a report may be trained from: τ_max in an asynchronous
        task, 0 in a synchronous one (what the chain stores as ``tauMax``)."""
        return self.tau_max if self.mode == "async" else 0


class TaskDraft(_Strict):
    """A task before it is escrowed on chain. The escrow, block reward, rounds, target,
    category, round duration and challenge period go on chain too (``createTask``) and must match."""

    model: str = Field("bmfl_cnn", description="model registry name")
    category: int = Field(1, gt=0, lt=2**32, description="data category bitmask vehicles must match")
    rounds: int = Field(10, ge=1, lt=2**16, description="K, maximum rounds")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once the global model reaches it")
    fraction: float = Field(1.0, gt=0, le=1, description="V, fraction of an edge's matching vehicles selected per round")
    reward_wei: int = Field(10**18, gt=0, lt=2**256, description="ρ_total, the escrowed reward")
    block_reward_wei: int = Field(10**15, ge=0, lt=2**96, description="ρ_b, the leader edge's reward per round (uint96 on chain)")
    round_duration_s: int = Field(600, gt=0, lt=2**32, description="seconds each round step may take on chain")
    challenge_period_s: int = Field(
        3600, ge=0, lt=2**32,
        description="seconds after the finish during which anyone can void a record its vehicle did not sign",
    )  # fmt: skip
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    aggregation: AggregationSpec = Field(
        default_factory=lambda: AggregationSpec(ratchet=DEFAULT_RATCHET, standing=StandingSpec()),
        description="filters and rules at the edges and the cloud (default: the pipeline below, behind the cloud's "
        "rollback guard and with each vehicle's standing in the task)",
    )  # fmt: skip
    asynchrony: AsyncSpec = Field(default_factory=AsyncSpec, description="sync (default) or async rounds")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds trainer selection (bmfl.rounds.seeds)")

    sizes_known_at_run: ClassVar[bool] = False
    """Whether σ may be calibrated later, on the vehicles' real sizes (the simulator)."""

    @model_validator(mode="after")
    def _escrow_covers_block_rewards(self) -> "TaskDraft":
        """``createTask`` reverts ``InsufficientEscrow`` otherwise."""
        if self.reward_wei < self.rounds * self.block_reward_wei:
            raise ValueError("reward_wei must cover rounds × block_reward_wei")
        return self

    @model_validator(mode="after")
    def _sigma_from_target_epsilon(self) -> "TaskDraft":
        """σ derived from ``training.target_epsilon`` for ``rounds`` rounds on
        ``plan_samples`` samples, or on every size when none is stated
        (``TrainingSpec.calibrated``, ``TrainingSpec.every_size``), so every party reads one σ."""
        training = self.training
        if training.target_epsilon is None:
            return self
        if training.plan_samples is None:
            if self.sizes_known_at_run:
                return self
            self.training = training.calibrated(self.rounds, training.every_size())
            return self
        self.training = training.calibrated(self.rounds, [training.plan_samples])
        return self


class TaskSpec(TaskDraft):
    """A published task: the draft with the id ``createTask`` returned."""

    task_id: int = Field(ge=1, le=MAX_TASK_ID, description="id returned by BMFLTasks.createTask")
