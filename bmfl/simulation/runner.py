"""The simulation loop: BMFL's double aggregation (Algorithm 2) run in one process.

One round r:
1. vehicles drive (mobility) and associate with their nearest edge, or keep a static
   or given edge; every edge selects ⌈V·n_ℓ⌉ of its n_ℓ associated vehicles
   (``bmfl.rounds.select_trainers``, the edges' rule);
2. each selected vehicle trains from w^{r-1} (Algorithm 1) and uploads w̃_m; an attacker
   runs its attack's hooks around the same training; the round's vehicles train
   together, up to ``bmfl.simulation.vehicles.CHUNK`` per call
   (``bmfl.training.fleet.fleet_uploads``: the same uploads as one by one), in this
   process or in Ray tasks (``ray_address``, ``bmfl.simulation.ray_fleet``); a
   colluding attack then shapes each edge's attackers' uploads together
   (``bmfl.attacks.shape_edge_uploads``), seeing the edge's honest uploads when its
   threat model is omniscient;
3. each edge filters and aggregates (``bmfl.rounds.aggregate_edge``) → preliminary
   model w_ℓ and a verdict (θ, flagged, reason, Λ) per upload, in edge order as soon
   as its trainers have uploaded, after which its uploads are dropped (only one edge's
   and one training chunk's are held at a time, not the whole fleet's);
4. proof of testing accuracy: every recording edge scores every w_ℓ on the publisher's
   test set; upper medians of the other edges' scores → leader, with three or more
   edges (``bmfl.rounds.medians_and_leader``, as the chain);
5. the cloud aggregates the w_ℓ weighted by the data behind them (Eq. 3,
   ``bmfl.rounds.aggregate_cloud``) → w^r.
These are the round core's functions, which the edge and cloud services call too.
Contributions C_{m,ℓ} = Σ_r θ_{m,ℓ}^r are kept per (edge, vehicle) and the escrow is
split at the end with ``bmfl.incentives.split_payouts`` (Eq. 26–29). Flat
single-server FL is the same loop with ``edges = 1``.

An upload is *flagged* when it gets aggregation weight 0 at its edge: rejected by a
filter, not selected by the rule (Krum), or non-finite. Flagged uploads earn nothing.
An edge whose rule cannot be applied (too few uploads for its trimming, a diverged
w^{r-1}) records no model; one that flagged every upload records w^{r-1} with no data
behind it; both count in ``edges_silent``. If no edge has data, w^r = w^{r-1}. With
``attack.ideal_filter`` the edges drop exactly the attackers' uploads (reason
``ideal_filter``: a reference, not a defence, since it knows who the attackers are).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmfl.aggregation import Aggregator, Verdict
from bmfl.attacks import shape_edge_uploads
from bmfl.data import TensorData, load_dataset
from bmfl.device import default_device
from bmfl.incentives import SCALE, Payouts, split_payouts, to_fixed
from bmfl.params import flatten, load_vector
from bmfl.partition import make_partition
from bmfl.rounds import initial_model as seeded_model
from bmfl.rounds import (
    aggregate_cloud,
    aggregate_edge,
    choose_attackers,
    cloud_rule,
    server_optimizer,
    cross_scores,
    guard_cloud,
    medians_and_leader,
    select_trainers,
    stop_reached,
    target_fixed,
    task_edge_rule,
    task_scorer,
)
from bmfl.blobs.store import BlobStore
from bmfl.privacy.engine import COUNT_NOISE
from bmfl.rounds.edge import EdgeOutcome
from bmfl.rounds.ratchet import Ratchet, refused_in_a_row
from bmfl.rounds.standing import task_standings
from bmfl.rounds.traffic import Transfer, summarise
from bmfl.simulation.accounting import BlobMeter, share_compute
from bmfl.simulation.assignment import assign_vehicles, associations, members
from bmfl.simulation.config import SimulationConfig
from bmfl.simulation.pipeline import build_attack
from bmfl.simulation.stragglers import ComputeClock
from bmfl.simulation.vehicles import Fleet, InProcess
from bmfl.training import evaluate
from bmfl.training.local import LocalTrainingConfig

__all__ = ["RoundMetrics", "SimulationResult", "assign_vehicles", "run_simulation"]


@dataclass
class RoundMetrics:
    round: int
    accuracy: float | None
    loss: float  # cross-entropy, or MSE for regression
    mae: float | None
    edge_accuracies: list[float]  # test scores ᾱ_ℓ of the edges that submitted (they count only with a consensus)
    leader: int | None  # None without a consensus (fewer than 3 edges scored)
    trainers: int
    epsilon_max: float | None
    epsilon_mean: float | None
    upstream_bytes_cloud: int  # blob bytes the edges send the cloud (≈ d·L floats)
    upstream_bytes_flat: int  # blob bytes the trainers upload, what a flat server would receive (≈ d·K floats)
    wall_time_s: float
    attack_success_rate: float | None = None  # the attack's own goal on the test set (Attack.success_rate)
    attackers_selected: int = 0
    attackers_flagged: int = 0
    attackers_missed: int = 0
    honest_flagged: int = 0  # honest uploads wrongly given weight 0
    attacker_weight: float = 0.0  # share of w^r that comes from attackers' uploads
    handovers: int = 0  # vehicles whose edge changed since the previous round
    edges_silent: int = 0  # edges with trainers but no preliminary model (nothing kept, or rule not applicable)
    rolled_back_to: int | None = None  # the ratchet refused the round's model: w^r is this round's global model
    user_epsilon: float | None = None  # dp_fedavg edges: user-level ε so far (bmfl.privacy.user_level)
    uploads: list[dict] = field(default_factory=list)  # per upload: vehicle, edge, attacker, θ, flagged, reason, Λ, T_Λ
    # encoded-blob bytes sent (up) and received (down), bmfl.simulation.accounting
    bytes_up_vehicles: int = 0
    bytes_down_vehicles: int = 0
    bytes_up_edges: int = 0
    bytes_down_edges: int = 0
    bytes_up_cloud: int = 0
    bytes_down_cloud: int = 0
    compute_s_vehicles: float = 0.0  # training CPU seconds, all trainers together
    compute_s_vehicle_max: float = 0.0
    sim_time_s: float = 0.0  # simulated wall clock when w^r exists (bmfl.simulation.stragglers)
    stale_refused: int = 0  # async: reports refused as older than τ_max
    staleness_mean: float | None = None  # async: mean τ of the buffer's reports
    traffic: dict = field(default_factory=dict)  # {"vehicles": {v: {up, down, compute_s}}, "edges": {ℓ: {up, down}}, "cloud": {up, down}}


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundMetrics] = field(default_factory=list)
    epsilons: dict[int, float] = field(default_factory=dict)
    final_vector: torch.Tensor | None = None
    attackers: list[int] = field(default_factory=list)
    contributions: dict[int, dict[int, int]] = field(default_factory=dict)  # edge → vehicle → Σ_r to_fixed(θ)
    participation: list[dict[int, tuple[int, int]]] = field(default_factory=list)  # per round: vehicle → (edge, θ)
    payouts: Payouts | None = None
    selected: list[dict[int, list[int]]] = field(default_factory=list)  # per round: edge → its trainers
    verdicts: list[dict[int, dict[int, Verdict]]] = field(default_factory=list)  # per round: edge → vehicle → verdict
    leaders: list[int | None] = field(default_factory=list)  # per round (None: no consensus)
    models: list[torch.Tensor] = field(default_factory=list)  # per round w^r, with run_simulation(keep_models=True)
    transfers: list[list[Transfer]] = field(default_factory=list)  # per round: every blob moved

    @property
    def final(self) -> RoundMetrics:
        return self.rounds[-1]

    def rows(self) -> list[dict]:
        return [asdict(r) for r in self.rounds]

    def record(self, metrics: RoundMetrics, *, participation: dict[int, tuple[int, int]],
               selected: dict[int, list[int]], verdicts: dict[int, dict[int, Verdict]], leader: int | None,
               transfers: list[Transfer], model: torch.Tensor | None) -> None:  # fmt: skip
        """One round's (or asynchronous update's) bookkeeping; ``model`` kept when given."""
        self.rounds.append(metrics)
        self.participation.append(participation)
        self.selected.append(selected)
        self.verdicts.append(verdicts)
        self.leaders.append(leader)
        self.transfers.append(transfers)
        if model is not None:
            self.models.append(model)

    def settle(self, engines: dict, final_vector: torch.Tensor, contributions: dict[int, dict[int, int]],
               leaders: list[int], scores: dict[int, int]) -> None:  # fmt: skip
        """The run's end: each vehicle's ε, w^R, the contributions and the payout split."""
        self.epsilons = {v: e.epsilon() for v, e in sorted(engines.items()) if e.steps}
        self.final_vector = final_vector
        self.contributions = {e: dict(sorted(c.items())) for e, c in sorted(contributions.items())}
        self.payouts = split_payouts(self.config.reward_wei, self.config.block_reward_wei, leaders, scores,
                                     self.contributions)  # fmt: skip


SIMULATED_TASK_ID = 1
"""The task id that seeds trainer selection (``bmfl.rounds.select_trainers``): the first
task on a fresh chain, so a simulation replays a deployment's first task."""


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )


def _traffic_fields(traffic) -> dict:
    """RoundMetrics' byte and compute fields from a round's ``RoundTraffic``."""
    seconds = [v["compute_s"] for v in traffic.vehicles.values()]
    fields = {f"bytes_{d}_{p}": traffic.total(p, d) for p in ("vehicles", "edges", "cloud") for d in ("up", "down")}
    return {**fields, "compute_s_vehicles": sum(seconds), "compute_s_vehicle_max": max(seconds, default=0.0),
            "traffic": traffic.as_dict()}


def _recorded(outcome: EdgeOutcome, reference: torch.Tensor) -> torch.Tensor:
    """What an edge records from a round: its preliminary model, or w^{r-1} where none."""
    return reference if outcome.preliminary is None else outcome.preliminary


def _closing(close: Callable[[Mapping[int, torch.Tensor]], EdgeOutcome]) -> Callable[[Mapping[int, torch.Tensor]], EdgeOutcome]:
    """``close`` remembering its last answer: a white-box attack asks both what the edge
    records and whom it bars about the same push (the same mapping)."""
    last: dict[str, Any] = {}

    def closed(trial: Mapping[int, torch.Tensor]) -> EdgeOutcome:
        if last.get("trial") is not trial:
            last.update(trial=trial, outcome=close(trial))
        return last["outcome"]

    return closed


def initial_model(config: SimulationConfig) -> torch.nn.Module:
    """w⁰ of the run (``bmfl.rounds.initial_model``: a publisher with the same seed
    publishes the same initial model)."""
    return seeded_model(config.model, config.seed, **config.model_options)


def edge_test_set(test: TensorData, config: SimulationConfig) -> TensorData:
    """The publisher's private test set at the edges: ``data.edge_test_samples`` test
    samples drawn by the seed, or the whole test set."""
    n = config.data.edge_test_samples
    if n is None:
        return test
    return test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(config.seed))[:n])


@dataclass
class Setup:
    """What both modes build from a config before the first update: the config with σ
    calibrated where it states a target ε, w⁰, the edge rule,
    the attackers, the vehicles (their data, random sources and privacy engines: a
    :class:`Fleet`) and the simulated clock."""

    config: SimulationConfig
    test: TensorData
    sizes: dict[int, int]
    model: torch.nn.Module
    scorer: Callable
    local_cfg: LocalTrainingConfig
    edge_agg: Aggregator
    attack: Any
    attackers: frozenset[int]
    excluded: dict[int, str]
    fleet: Fleet
    clock: ComputeClock
    starts: list[bytes] = field(default_factory=list)  # digests of the models rounds 1, 2, … began from

    @property
    def private(self) -> bool:
        """Whether the vehicles report ε: DP-SGD adds noise, or inputs went through input DP."""
        noisy = self.local_cfg.dp and self.local_cfg.noise_multiplier > 0
        return noisy or self.config.training.input_dp is not None


def prepare(config: SimulationConfig) -> Setup:
    """Everything a run needs before its first update (the seed draws all of it). The
    vehicles train and the edges score on ``bmfl.device.default_device()`` (w⁰ is drawn
    on the CPU first, so every device starts from the same w⁰); the round's vectors stay
    on the CPU."""
    device = default_device()
    train, test = load_dataset(config.data.name, **config.data.options)
    labels = train.groups if config.partition.kind == "by_group" else train.y
    partition = make_partition(config.partition.kind, labels, config.vehicles, config.seed, **config.partition.options)
    # σ from a target ε is planned on the vehicles' real sizes (bmfl.privacy.calibrate)
    config = config.model_copy(update={"training": config.training.calibrated(config.rounds, partition.sizes)})
    counts = config.sample_counts or partition.sizes
    model = initial_model(config).to(device)
    edge_test = edge_test_set(test, config).to(device)
    local_cfg = config.training.local()
    scorer = task_scorer(model, edge_test)
    starts: list[bytes] = []  # the runner adds each round's, as the chain's RoundStarted events record it
    edge_agg = task_edge_rule(
        config.aggregation, model, edge_test, scorer, config.training, 0.0 if config.sample_counts is None else COUNT_NOISE,
        refusals=lambda r: refused_in_a_row(starts[:r]),
    )
    attack = build_attack(config.attack)
    attackers = choose_attackers(config.vehicles, config.attack.fraction, config.seed) if attack else frozenset()
    excluded = {v: "ideal_filter" for v in attackers} if config.attack.ideal_filter else {}
    fleet = Fleet(
        model, train, partition.indices, local_cfg, attack, attackers, config.seed, config.insecure_reproducible_noise,
        config.training.delta, config.training.accountant,
    )  # fmt: skip
    if (inputs := config.training.input_dp) is not None:
        fleet.release_inputs(inputs.sigma, inputs.clip, inputs.targets)
    clock = ComputeClock(config.stragglers, config.vehicles, config.seed)
    return Setup(config, test, dict(enumerate(counts)), model, scorer, local_cfg, edge_agg, attack, attackers, excluded,
                 fleet, clock, starts)  # fmt: skip


def run_simulation(
    config: SimulationConfig,
    console: Console | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    progress: Progress | None = None,
    keep_models: bool = False,
    blob_store: BlobStore | None = None,
    ray_address: str | None = None,
) -> SimulationResult:
    """Run ``config`` and return per-round metrics (and call ``on_round`` after each).
    Pass ``progress`` to show the run's bars inside a caller's rich progress display;
    ``keep_models`` keeps every round's w^r in ``SimulationResult.models``; every blob
    the round moves is put in ``blob_store`` when one is given. ``ray_address`` trains
    the vehicles in Ray tasks (``bmfl.simulation.ray_fleet.RayFleet``: "local", "auto"
    or a cluster address) with the same results. A sync round lasts as long as its
    slowest trainer on the simulated clock (``sim_time_s``); ``asynchrony.mode = "async"``
    runs ``bmfl.simulation.asynchronous.run_async`` instead (in-process, no blob store)."""
    if progress is None:
        with _progress(console or Console()) as own:
            return run_simulation(config, console, on_round, own, keep_models, blob_store, ray_address)
    if config.asynchrony.mode == "async":
        from bmfl.simulation.asynchronous import run_async  # it builds on this module

        return run_async(config, progress, on_round, keep_models)
    setup = prepare(config)
    config, test, sizes, model, scorer, fleet, clock = setup.config, setup.test, setup.sizes, setup.model, setup.scorer, setup.fleet, setup.clock
    edge_agg, attack, attackers, excluded = setup.edge_agg, setup.attack, setup.attackers, setup.excluded
    global_vec = flatten(model.state_dict()).cpu()
    previous_vec = None
    cloud_agg = cloud_rule(config.aggregation)
    server = server_optimizer(config.aggregation, config.rounds)
    guarded = config.aggregation.ratchet is not None and test.is_classification
    ratchet = Ratchet(config.aggregation.ratchet) if guarded else None  # type: ignore[arg-type]
    sim_time = 0.0
    if ray_address is None:
        trainer = InProcess(fleet)
    else:
        from bmfl.simulation.ray_fleet import RayFleet

        trainer = RayFleet(fleet, ray_address)
    result = SimulationResult(config, attackers=sorted(attackers))
    contributions: dict[int, dict[int, int]] = defaultdict(dict)
    edge_scores: dict[int, int] = defaultdict(int)  # S_ℓ: consensus scores summed over quorum rounds
    standing_of: dict[int, float] = {}  # vehicle → its standing in the task, wherever it goes (bmfl.rounds.standing)
    leaders: list[int] = []
    meter = BlobMeter(config.model, model.state_dict(), SIMULATED_TASK_ID, blob_store)
    assoc = associations(config)
    prev_edge_of: np.ndarray | None = None

    try:
        rounds_task = progress.add_task(f"{config.name}: rounds", total=config.rounds)
        vehicles_task = progress.add_task("  local training", total=None)
        for r in range(1, config.rounds + 1):
            start = time.perf_counter()
            setup.starts.append(hashlib.sha256(global_vec.numpy().tobytes()).digest())
            edge_of = next(assoc)
            handovers = 0 if prev_edge_of is None else int((edge_of != prev_edge_of).sum())
            prev_edge_of = edge_of.copy()
            selected = [
                select_trainers(group, config.fraction, config.seed, SIMULATED_TASK_ID, r, edge)
                for edge, group in enumerate(members(edge_of, config.edges))
            ]
            total = sum(len(s) for s in selected)
            to_train = [v for chosen in selected for v in chosen if v not in excluded]  # ideal filter: not worth training
            progress.reset(vehicles_task, total=len(to_train))
            trained: dict[int, torch.Tensor] = {}
            compute: dict[int, float] = {}
            outcomes, upload_blobs = {}, {}
            slowest = 0.0  # simulated seconds of the round's slowest trainer: a sync round waits for it
            waiting = deque(enumerate(selected))  # edges in order; each closes once all its trainers uploaded
            for chunk in itertools.chain(trainer.train(to_train, r, global_vec, previous_vec, edge_of), [None]):
                if chunk is not None:
                    trained.update(zip(chunk.vehicles, chunk.uploads))
                    compute.update(share_compute(chunk.seconds, chunk.work))
                    slowest = max([slowest, *(clock.duration(v, n, r) for v, n in chunk.work.items())])
                    progress.advance(vehicles_task, len(chunk.vehicles))
                while waiting and all(v in trained for v in waiting[0][1] if v not in excluded):
                    edge, chosen = waiting.popleft()  # its uploads leave memory once it has aggregated them
                    ups = {v: trained.pop(v) for v in chosen if v not in excluded}
                    gone = {v: excluded[v] for v in chosen if v in excluded}
                    standings = task_standings(config, standing_of)
                    if attack is not None and attack.colludes:
                        close = _closing(lambda trial: aggregate_edge(edge_agg, trial, sizes, global_vec, r, gone, standing=standings))
                        ups = shape_edge_uploads(
                            attack, ups, attackers, edge, global_vec, r, config.seed, previous_vec,
                            lambda trial: _recorded(close(trial), global_vec),
                            None if standings is None else lambda trial: standings.barred_after(close(trial).verdicts),
                        )  # fmt: skip
                    upload_blobs[edge] = meter.uploads(r, ups)
                    if chosen:
                        outcomes[edge] = aggregate_edge(edge_agg, ups, sizes, global_vec, r, gone, standing=standings)
                        if standings is not None:  # Λ is the standing after the round, as the chain records it
                            standing_of |= {v: -x.reliability for v, x in outcomes[edge].verdicts.items() if x.reliability is not None}
            participation = {}
            for edge, outcome in outcomes.items():
                for v, verdict in outcome.verdicts.items():
                    theta = to_fixed(verdict.theta)
                    contributions[edge][v] = contributions[edge].get(v, 0) + theta
                    participation[v] = (edge, theta)
            preliminaries = {e: o.preliminary for e, o in outcomes.items() if o.preliminary is not None}
            silent = sum(1 for o in outcomes.values() if o.samples == 0)

            leader, attacker_weight, row = None, 0.0, {}
            if preliminaries:
                # every recording edge scores every preliminary on the same test set, so the
                # consensus score of an edge (the median of the others' scores) is its score
                row = cross_scores(preliminaries, scorer)
                consensus = medians_and_leader({e: row for e in preliminaries})
                if consensus is not None:  # a quorum of three or more scorers
                    medians, leader = consensus
                    for edge, score in medians.items():
                        edge_scores[edge] += score
                    leaders.append(leader)
            transfers = meter.round(r, global_vec, upload_blobs, preliminaries)
            traffic = summarise(transfers, compute)
            cloud = aggregate_cloud(
                cloud_agg, preliminaries, {e: outcomes[e].samples for e in preliminaries}, global_vec, r, server
            )
            if cloud is not None and ratchet is not None:  # the edges' test set judges w^r, as the services' edges do
                cloud = guard_cloud(cloud, float(scorer(cloud.model[None])[0]), ratchet, r, server)
            if cloud is not None:
                previous_vec, global_vec = global_vec, cloud.model
                for e, p in cloud.weights.items():
                    attacker_weight += p * sum(v.theta for m, v in outcomes[e].verdicts.items() if m in attackers)
            else:
                previous_vec = global_vec
            ev = evaluate(load_vector(model, global_vec), test)
            asr = None if attack is None else attack.success_rate(model, test)
            eps = [e.epsilon() for e in fleet.engines.values() if e.steps] if setup.private else []
            flags = [(v in attackers, verdict.flagged) for o in outcomes.values() for v, verdict in o.verdicts.items()]
            n_att = sum(a for a, _ in flags)
            att_flagged = sum(a and f for a, f in flags)
            metrics = RoundMetrics(
                round=r,
                accuracy=ev.accuracy,
                loss=ev.loss,
                mae=ev.mae,
                edge_accuracies=[row[e] / SCALE for e in sorted(row)],
                leader=leader,
                trainers=total,
                epsilon_max=max(eps) if eps else None,
                epsilon_mean=sum(eps) / len(eps) if eps else None,
                upstream_bytes_cloud=traffic.cloud["down"],
                upstream_bytes_flat=traffic.total("vehicles", "up"),
                wall_time_s=time.perf_counter() - start,
                sim_time_s=sim_time + slowest,
                attack_success_rate=asr,
                attackers_selected=n_att,
                attackers_flagged=att_flagged,
                attackers_missed=n_att - att_flagged,
                honest_flagged=sum((not a) and f for a, f in flags),
                attacker_weight=attacker_weight,
                handovers=handovers,
                edges_silent=silent,
                rolled_back_to=None if cloud is None else cloud.rolled_back_to,
                user_epsilon=max((o.user_level_epsilon for o in outcomes.values() if o.user_level_epsilon is not None),
                                 default=None),  # fmt: skip
                uploads=[
                    {"vehicle": v, "edge": e, "attacker": v in attackers, **asdict(verdict)}
                    for e, o in sorted(outcomes.items()) for v, verdict in o.verdicts.items()
                ],
                **_traffic_fields(traffic),
            )
            sim_time += slowest
            result.record(
                metrics, participation=participation, selected={e: chosen for e, chosen in enumerate(selected) if chosen},
                verdicts={e: o.verdicts for e, o in outcomes.items()}, leader=leader, transfers=transfers,
                model=global_vec if keep_models else None,
            )  # fmt: skip
            progress.advance(rounds_task)
            if on_round:
                on_round(metrics)
            if stop_reached(r, config.rounds, target_fixed(config.target_accuracy), to_fixed(ev.accuracy or 0.0), True):
                break
        progress.remove_task(vehicles_task)
        progress.remove_task(rounds_task)
    finally:
        trainer.close()
    scores = {e: edge_scores.get(e, 0) for e in sorted(set(contributions) | set(edge_scores))}
    result.settle(fleet.engines, global_vec, contributions, leaders, scores)
    return result
