"""The simulation loop: BMFL's double aggregation (Algorithm 2) run in one process.

One round r:
1. vehicles drive (mobility) and associate with their nearest edge, or keep a static
   edge; every edge selects ⌈V·n_ℓ⌉ of its n_ℓ associated vehicles;
2. each selected vehicle trains E local epochs from w^{r-1} (Algorithm 1) and uploads
   w̃_m; an attacker runs its attack's hooks around the same training
   (``bmfl.attacks.local_upload``); the round's vehicles train together, up to
   ``TRAIN_CHUNK`` per call (``bmfl.training.fleet.fleet_uploads``: the same uploads as
   one by one);
3. each edge drops non-finite uploads (the services' upload verification), runs its
   filters and rule (``bmfl.aggregation.compose``) → preliminary model w_ℓ and weights θ;
4. proof of testing accuracy: every w_ℓ is scored on the publisher's test set (ᾱ_ℓ),
   leader = argmax (``bmfl.consensus``);
5. the cloud aggregates the w_ℓ weighted by the data behind them (Eq. 3) → w^r.
Contributions C_{m,ℓ} = Σ_r θ_{m,ℓ}^r are kept per (edge, vehicle) and the escrow is
split at the end with ``bmfl.incentives.split_payouts`` (Eq. 26–29). Flat
single-server FL is the same loop with ``edges = 1``.

An upload is *flagged* when it gets aggregation weight 0 at its edge: rejected by a
filter, not selected by the rule (Krum), or non-finite. Flagged uploads earn nothing.
An edge whose rule cannot be applied to what it kept (too few uploads for its trimming,
a diverged w^{r-1}) submits no model that round (``edges_silent``); if no edge submits,
w^r = w^{r-1}. With ``attack.ideal_filter`` the edges drop exactly the attackers'
uploads (a reference, not a defence: it knows who the attackers are).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmfl.aggregation import AggregationResult, Aggregator
from bmfl.attacks import AttackContext, PixelBackdoor, attack_success_rate
from bmfl.consensus import consensus_accuracies, score_evaluator, select_leader
from bmfl.data import load_dataset
from bmfl.incentives import Payouts, mean_accuracy, split_payouts, to_fixed
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.partition import make_partition
from bmfl.privacy import PrivacyEngine
from bmfl.rounds.seeds import vehicle_seed
from bmfl.simulation.assignment import assign_vehicles, associations, members
from bmfl.simulation.config import SimulationConfig
from bmfl.simulation.pipeline import build_attack, build_rule, choose_attackers
from bmfl.training import evaluate
from bmfl.training.fleet import fleet_uploads

__all__ = ["RoundMetrics", "SimulationResult", "assign_vehicles", "run_simulation"]

BYTES_PER_FLOAT = 4


@dataclass
class RoundMetrics:
    round: int
    accuracy: float | None
    loss: float  # cross-entropy, or MSE for regression
    mae: float | None
    edge_accuracies: list[float]  # consensus scores ᾱ_ℓ of the edges that submitted
    leader: int | None  # None when no edge submitted a model
    trainers: int
    epsilon_max: float | None
    epsilon_mean: float | None
    upstream_bytes_cloud: int  # d·L floats: what the edges send the cloud
    upstream_bytes_flat: int  # d·K floats: what a flat server would receive
    wall_time_s: float
    attack_success_rate: float | None = None  # backdoor: triggered test inputs → target
    attackers_selected: int = 0
    attackers_flagged: int = 0
    attackers_missed: int = 0
    honest_flagged: int = 0  # honest uploads wrongly given weight 0
    attacker_weight: float = 0.0  # share of w^r that comes from attackers' uploads
    handovers: int = 0  # vehicles whose edge changed since the previous round
    edges_silent: int = 0  # edges with trainers but no preliminary model (nothing kept, or rule not applicable)


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

    @property
    def final(self) -> RoundMetrics:
        return self.rounds[-1]

    def rows(self) -> list[dict]:
        return [asdict(r) for r in self.rounds]


TRAIN_CHUNK = 64
"""Vehicles per ``fleet_uploads`` call (the progress bar moves per call; the uploads do
not depend on it: every vehicle has its own generator)."""


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )


def _aggregate(rule: Aggregator, uploads: torch.Tensor | None, sizes: torch.Tensor, reference: torch.Tensor,
               round_index: int) -> AggregationResult | None:
    """``rule`` on the uploads, or None when there is nothing to aggregate or the rule
    does not apply to these inputs (too few uploads for its trimming or Krum's f, a
    non-finite reference after divergence): the server then submits no model."""
    if uploads is None or uploads.shape[0] == 0:
        return None
    try:
        return rule(uploads, sizes, reference, round_index=round_index)
    except ValueError:
        return None


def run_simulation(
    config: SimulationConfig,
    console: Console | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``config`` and return per-round metrics (and call ``on_round`` after each).
    Pass ``progress`` to show the run's bars inside a caller's rich progress display."""
    if progress is None:
        with _progress(console or Console()) as own:
            return run_simulation(config, console, on_round, own)
    torch.manual_seed(config.seed)
    train, test = load_dataset(config.data.name, **config.data.options)
    labels = train.groups if config.partition.kind == "by_group" else train.y
    partition = make_partition(config.partition.kind, labels, config.vehicles, config.seed, **config.partition.options)
    vehicle_data = [train.subset(idx) for idx in partition.indices]
    n_edge_test = config.data.edge_test_samples
    edge_test = test if n_edge_test is None else test.subset(
        torch.randperm(len(test), generator=torch.Generator().manual_seed(config.seed))[:n_edge_test]
    )
    model = create_model(config.model, **config.model_options)
    global_vec = flatten(model.state_dict())
    previous_vec = None
    local_cfg = config.training.local()
    agg = config.aggregation
    edge_rule = build_rule(agg.edge, agg.edge_options, agg.edge_filters, model, edge_test)
    cloud_rule = build_rule(agg.cloud, agg.cloud_options, agg.cloud_filters, model, edge_test)
    consensus_eval = score_evaluator(model, edge_test)
    attack = build_attack(config.attack)
    attackers = choose_attackers(config.vehicles, config.attack.fraction, config.seed) if attack else frozenset()
    generators = [torch.Generator().manual_seed(vehicle_seed(config.seed, v)) for v in range(config.vehicles)]
    engines = [PrivacyEngine(config.training.delta, method=config.training.accountant) for _ in range(config.vehicles)]
    select_gen = torch.Generator().manual_seed(config.seed + 17)
    result = SimulationResult(config, attackers=sorted(attackers))
    contributions: dict[int, dict[int, int]] = defaultdict(dict)
    edge_scores: dict[int, list[int]] = defaultdict(list)
    leaders: list[int] = []
    d = global_vec.numel()
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
            sorted(group[i] for i in torch.randperm(len(group), generator=select_gen)[: math.ceil(config.fraction * len(group))].tolist())
            for group in members(edge_of, config.edges)
        ]
        total = sum(len(s) for s in selected)
        to_train = [v for chosen in selected for v in chosen if not (config.attack.ideal_filter and v in attackers)]
        progress.reset(vehicles_task, total=len(to_train))
        trained: dict[int, torch.Tensor] = {}
        for lo in range(0, len(to_train), TRAIN_CHUNK):
            vs = to_train[lo : lo + TRAIN_CHUNK]
            trained.update(zip(vs, fleet_uploads(
                model, [vehicle_data[v] for v in vs], local_cfg,
                [AttackContext(global_vec, generators[v], previous_vec, r) for v in vs],
                [attack if v in attackers else None for v in vs], [engines[v] for v in vs],
            )))  # fmt: skip
            progress.advance(vehicles_task, len(vs))
        edge_vecs, edge_sizes, edge_weights, participation, silent = {}, {}, {}, {}, 0
        for edge, chosen in enumerate(selected):
            if not chosen:
                continue
            # an ideal filter's attackers are dropped below, so not worth training
            stacked = torch.stack([trained[v] if v in trained else global_vec.clone() for v in chosen])
            sizes = torch.tensor([len(vehicle_data[v]) for v in chosen], dtype=torch.float64)
            weights = torch.zeros(len(chosen), dtype=torch.float64)
            verified = torch.isfinite(stacked).all(dim=1)
            if config.attack.ideal_filter:
                verified &= torch.tensor([v not in attackers for v in chosen])
            outcome = _aggregate(edge_rule, stacked[verified], sizes[verified], global_vec, r)
            if outcome is not None:
                weights[verified] = outcome.weights.to(torch.float64)
                if bool((weights > 0).any()):
                    edge_vecs[edge] = outcome.aggregate
                    edge_sizes[edge] = float(sizes[weights > 0].sum())
            if edge not in edge_vecs:
                weights.zero_()
                silent += 1
            edge_weights[edge] = dict(zip(chosen, weights.tolist()))
            for v, w in edge_weights[edge].items():
                theta = to_fixed(w)
                contributions[edge][v] = contributions[edge].get(v, 0) + theta
                participation[v] = (edge, theta)

        leader, attacker_weight, scores = None, 0.0, {}
        order = list(edge_vecs)
        cloud = _aggregate(cloud_rule, torch.stack([edge_vecs[e] for e in order]) if order else None,
                           torch.tensor([edge_sizes[e] for e in order]), global_vec, r)
        if cloud is not None:
            scores = consensus_accuracies(edge_vecs, consensus_eval)
            for edge, score in scores.items():
                edge_scores[edge].append(score)
            leader = select_leader(scores)
            leaders.append(leader)
            previous_vec, global_vec = global_vec, cloud.aggregate
            for e, p in zip(order, cloud.weights.tolist()):
                attacker_weight += p * sum(w for v, w in edge_weights[e].items() if v in attackers)
        else:
            previous_vec = global_vec
        ev = evaluate(load_vector(model, global_vec), test)
        asr = attack_success_rate(model, test, attack.target) if isinstance(attack, PixelBackdoor) else None
        eps = [e.epsilon() for e in engines if e.steps] if local_cfg.dp and local_cfg.noise_multiplier > 0 else []
        flags = [(v in attackers, w == 0.0) for per in edge_weights.values() for v, w in per.items()]
        n_att = sum(a for a, _ in flags)
        att_flagged = sum(a and f for a, f in flags)
        metrics = RoundMetrics(
            round=r,
            accuracy=ev.accuracy,
            loss=ev.loss,
            mae=ev.mae,
            edge_accuracies=[scores[e] / 1e6 for e in sorted(scores)],
            leader=leader,
            trainers=total,
            epsilon_max=max(eps) if eps else None,
            epsilon_mean=sum(eps) / len(eps) if eps else None,
            upstream_bytes_cloud=d * len(edge_vecs) * BYTES_PER_FLOAT,
            upstream_bytes_flat=d * total * BYTES_PER_FLOAT,
            wall_time_s=time.perf_counter() - start,
            attack_success_rate=asr,
            attackers_selected=n_att,
            attackers_flagged=att_flagged,
            attackers_missed=n_att - att_flagged,
            honest_flagged=sum((not a) and f for a, f in flags),
            attacker_weight=attacker_weight,
            handovers=handovers,
            edges_silent=silent,
        )
        result.rounds.append(metrics)
        result.participation.append(participation)
        progress.advance(rounds_task)
        if on_round:
            on_round(metrics)
        if config.target_accuracy is not None and ev.accuracy is not None and ev.accuracy >= config.target_accuracy:
            break
    progress.remove_task(vehicles_task)
    progress.remove_task(rounds_task)
    result.epsilons = {v: e.epsilon() for v, e in enumerate(engines) if e.steps}
    result.final_vector = global_vec
    result.contributions = {e: dict(sorted(c.items())) for e, c in sorted(contributions.items())}
    edge_accuracy = {e: mean_accuracy(edge_scores.get(e, [])) for e in sorted(set(contributions) | set(edge_scores))}
    inc = config.incentives
    result.payouts = split_payouts(inc.escrow_wei, inc.block_reward_wei, leaders, edge_accuracy, result.contributions)
    return result
