"""The simulation loop: BMFL's double aggregation (Algorithm 2) run in one process.

One round r:
1. vehicles drive (mobility) and associate with their nearest edge, or keep a static
   or given edge; every edge selects ⌈V·n_ℓ⌉ of its n_ℓ associated vehicles
   (``bmfl.rounds.select_trainers``, the edges' rule);
2. each selected vehicle trains from w^{r-1} (Algorithm 1) and uploads w̃_m; an attacker
   runs its attack's hooks around the same training; the round's vehicles train
   together, up to ``TRAIN_CHUNK`` per call (``bmfl.training.fleet.fleet_uploads``: the
   same uploads as one by one); a colluding attack then shapes each edge's attackers'
   uploads together (``bmfl.attacks.shape_edge_uploads``), seeing the edge's honest
   uploads when its threat model is omniscient;
3. each edge filters and aggregates (``bmfl.rounds.aggregate_edge``) → preliminary
   model w_ℓ and a verdict (θ, flagged, reason, Λ) per upload;
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

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmfl.aggregation import Verdict
from bmfl.attacks import AttackContext, PixelBackdoor, attack_success_rate, shape_edge_uploads
from bmfl.data import TensorData, load_dataset
from bmfl.incentives import SCALE, Payouts, split_payouts, to_fixed
from bmfl.params import flatten, load_vector
from bmfl.partition import make_partition
from bmfl.privacy import PrivacyEngine, SecureGenerator
from bmfl.rounds import initial_model as seeded_model
from bmfl.rounds import (
    aggregate_cloud,
    aggregate_edge,
    choose_attackers,
    cloud_rule,
    server_optimizer,
    cross_scores,
    edge_rule,
    medians_and_leader,
    root_updater,
    select_trainers,
    stop_reached,
    target_fixed,
    task_scorer,
    vehicle_seed,
)
from bmfl.blobs.store import BlobStore
from bmfl.rounds.traffic import Transfer, summarise
from bmfl.simulation.accounting import BlobMeter, share_compute
from bmfl.simulation.assignment import assign_vehicles, associations, members
from bmfl.simulation.config import SimulationConfig
from bmfl.simulation.pipeline import build_attack
from bmfl.training import evaluate
from bmfl.training.fleet import fleet_uploads, plan_upload

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
    attack_success_rate: float | None = None  # backdoor: triggered test inputs → target
    attackers_selected: int = 0
    attackers_flagged: int = 0
    attackers_missed: int = 0
    honest_flagged: int = 0  # honest uploads wrongly given weight 0
    attacker_weight: float = 0.0  # share of w^r that comes from attackers' uploads
    handovers: int = 0  # vehicles whose edge changed since the previous round
    edges_silent: int = 0  # edges with trainers but no preliminary model (nothing kept, or rule not applicable)
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


TRAIN_CHUNK = 64
"""Vehicles per ``fleet_uploads`` call (the progress bar moves per call; the uploads do
not depend on it: every vehicle has its own generator)."""

SIMULATED_TASK_ID = 1
"""The task id that seeds trainer selection (``bmfl.rounds.select_trainers``): the first
task on a fresh chain, so a simulation replays a deployment's first task."""


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )


def _samples(data: TensorData, config, attack) -> int:
    """Samples one vehicle's round processes: steps × expected batch."""
    return plan_upload(data, config, attack).steps * min(config.batch_size, len(data))


def _traffic_fields(traffic) -> dict:
    """RoundMetrics' byte and compute fields from a round's ``RoundTraffic``."""
    seconds = [v["compute_s"] for v in traffic.vehicles.values()]
    fields = {f"bytes_{d}_{p}": traffic.total(p, d) for p in ("vehicles", "edges", "cloud") for d in ("up", "down")}
    return {**fields, "compute_s_vehicles": sum(seconds), "compute_s_vehicle_max": max(seconds, default=0.0),
            "traffic": traffic.as_dict()}


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


def run_simulation(
    config: SimulationConfig,
    console: Console | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    progress: Progress | None = None,
    keep_models: bool = False,
    blob_store: BlobStore | None = None,
) -> SimulationResult:
    """Run ``config`` and return per-round metrics (and call ``on_round`` after each).
    Pass ``progress`` to show the run's bars inside a caller's rich progress display;
    ``keep_models`` keeps every round's w^r in ``SimulationResult.models``; every blob
    the round moves is put in ``blob_store`` when one is given."""
    if progress is None:
        with _progress(console or Console()) as own:
            return run_simulation(config, console, on_round, own, keep_models, blob_store)
    train, test = load_dataset(config.data.name, **config.data.options)
    labels = train.groups if config.partition.kind == "by_group" else train.y
    partition = make_partition(config.partition.kind, labels, config.vehicles, config.seed, **config.partition.options)
    vehicle_data = [train.subset(idx) for idx in partition.indices]
    # σ from a target ε is planned on the vehicles' real sizes (bmfl.privacy.calibrate)
    config = config.model_copy(update={"training": config.training.calibrated(config.rounds, [len(d) for d in vehicle_data])})
    counts = config.sample_counts or [len(d) for d in vehicle_data]
    sizes = dict(enumerate(counts))
    model = initial_model(config)
    edge_test = edge_test_set(test, config)
    global_vec = flatten(model.state_dict())
    previous_vec = None
    local_cfg = config.training.local()
    scorer = task_scorer(model, edge_test)
    edge_agg = edge_rule(
        config.aggregation, scorer if edge_test.is_classification else None, root_updater(model, edge_test, local_cfg)
    )
    cloud_agg = cloud_rule(config.aggregation)
    server = server_optimizer(config.aggregation)
    attack = build_attack(config.attack)
    attackers = choose_attackers(config.vehicles, config.attack.fraction, config.seed) if attack else frozenset()
    excluded = {v: "ideal_filter" for v in attackers} if config.attack.ideal_filter else {}
    generators = [
        torch.Generator().manual_seed(vehicle_seed(config.seed, v)) if config.insecure_reproducible_noise
        else SecureGenerator()
        for v in range(config.vehicles)
    ]  # fmt: skip
    engines = [PrivacyEngine(config.training.delta, method=config.training.accountant) for _ in range(config.vehicles)]
    result = SimulationResult(config, attackers=sorted(attackers))
    contributions: dict[int, dict[int, int]] = defaultdict(dict)
    edge_scores: dict[int, int] = defaultdict(int)  # S_ℓ: consensus scores summed over quorum rounds
    leaders: list[int] = []
    meter = BlobMeter(config.model, model.state_dict(), SIMULATED_TASK_ID, blob_store)
    assoc = associations(config)
    prev_edge_of: np.ndarray | None = None

    rounds_task = progress.add_task(f"{config.name}: rounds", total=config.rounds)
    vehicles_task = progress.add_task("  local training", total=None)
    for r in range(1, config.rounds + 1):
        start = time.perf_counter()
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
        for lo in range(0, len(to_train), TRAIN_CHUNK):
            vs = to_train[lo : lo + TRAIN_CHUNK]
            began = time.process_time()
            trained.update(zip(vs, fleet_uploads(
                model, [vehicle_data[v] for v in vs], local_cfg,
                [AttackContext(global_vec, generators[v], previous_vec, r, v, int(edge_of[v])) for v in vs],
                [attack if v in attackers else None for v in vs], [engines[v] for v in vs],
            )))  # fmt: skip
            work = {v: _samples(vehicle_data[v], local_cfg, attack if v in attackers else None) for v in vs}
            compute.update(share_compute(time.process_time() - began, work))
            progress.advance(vehicles_task, len(vs))
        uploads = {edge: {v: trained[v] for v in chosen if v in trained} for edge, chosen in enumerate(selected)}
        if attack is not None and attack.colludes:
            uploads = {
                edge: shape_edge_uploads(attack, ups, attackers, edge, global_vec, r, config.seed, previous_vec)
                for edge, ups in uploads.items()
            }
        outcomes = {
            edge: aggregate_edge(
                edge_agg, uploads[edge], sizes, global_vec, r,
                {v: excluded[v] for v in chosen if v in excluded},
            )  # fmt: skip
            for edge, chosen in enumerate(selected)
            if chosen
        }
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
        transfers = meter.round(r, global_vec, uploads, preliminaries)
        traffic = summarise(transfers, compute)
        cloud = aggregate_cloud(
            cloud_agg, preliminaries, {e: outcomes[e].samples for e in preliminaries}, global_vec, r, server
        )
        if cloud is not None:
            previous_vec, global_vec = global_vec, cloud.model
            for e, p in cloud.weights.items():
                attacker_weight += p * sum(v.theta for m, v in outcomes[e].verdicts.items() if m in attackers)
        else:
            previous_vec = global_vec
        ev = evaluate(load_vector(model, global_vec), test)
        asr = attack_success_rate(model, test, attack.target) if isinstance(attack, PixelBackdoor) else None
        eps = [e.epsilon() for e in engines if e.steps] if local_cfg.dp and local_cfg.noise_multiplier > 0 else []
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
            attack_success_rate=asr,
            attackers_selected=n_att,
            attackers_flagged=att_flagged,
            attackers_missed=n_att - att_flagged,
            honest_flagged=sum((not a) and f for a, f in flags),
            attacker_weight=attacker_weight,
            handovers=handovers,
            edges_silent=silent,
            user_epsilon=max((o.user_level_epsilon for o in outcomes.values() if o.user_level_epsilon is not None),
                             default=None),  # fmt: skip
            uploads=[
                {"vehicle": v, "edge": e, "attacker": v in attackers, **asdict(verdict)}
                for e, o in sorted(outcomes.items()) for v, verdict in o.verdicts.items()
            ],
            **_traffic_fields(traffic),
        )
        result.rounds.append(metrics)
        result.participation.append(participation)
        result.selected.append({e: chosen for e, chosen in enumerate(selected) if chosen})
        result.verdicts.append({e: o.verdicts for e, o in outcomes.items()})
        result.leaders.append(leader)
        result.transfers.append(transfers)
        if keep_models:
            result.models.append(global_vec)
        progress.advance(rounds_task)
        if on_round:
            on_round(metrics)
        if stop_reached(r, config.rounds, target_fixed(config.target_accuracy), to_fixed(ev.accuracy or 0.0), True):
            break
    progress.remove_task(vehicles_task)
    progress.remove_task(rounds_task)
    result.epsilons = {v: e.epsilon() for v, e in enumerate(engines) if e.steps}
    result.final_vector = global_vec
    result.contributions = {e: dict(sorted(c.items())) for e, c in sorted(contributions.items())}
    scores = {e: edge_scores.get(e, 0) for e in sorted(set(contributions) | set(edge_scores))}
    result.payouts = split_payouts(config.reward_wei, config.block_reward_wei, leaders, scores, result.contributions)
    return result
