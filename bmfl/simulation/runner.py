"""The simulation loop: BMFL's double aggregation (Algorithm 2) run in one process.

One round r:
1. every edge selects ⌈V·n_ℓ⌉ of its n_ℓ associated vehicles;
2. each selected vehicle trains E local epochs from w^{r-1} (Algorithm 1) and uploads w̃_m;
3. each edge aggregates its uploads with the configured rule → preliminary model w_ℓ;
4. proof of testing accuracy: every w_ℓ is scored on the test set (ᾱ_ℓ), leader = argmax;
5. the cloud aggregates the w_ℓ weighted by the data behind them (Eq. 3) → w^r.
Flat single-server FL is the same loop with ``edges = 1``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmfl.aggregation import get_aggregator
from bmfl.consensus import select_leader
from bmfl.data import load_dataset
from bmfl.incentives import to_fixed
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.partition import make_partition
from bmfl.privacy import PrivacyAccountant
from bmfl.simulation.config import SimulationConfig
from bmfl.training import evaluate, train_local

BYTES_PER_FLOAT = 4


@dataclass
class RoundMetrics:
    round: int
    accuracy: float | None
    loss: float
    mae: float | None
    edge_accuracies: list[float | None]
    leader: int
    trainers: int
    epsilon_max: float | None
    epsilon_mean: float | None
    upstream_bytes_cloud: int  # d·L floats: what the edges send the cloud
    upstream_bytes_flat: int  # d·K floats: what a flat server would receive
    wall_time_s: float


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundMetrics] = field(default_factory=list)
    epsilons: dict[int, float] = field(default_factory=dict)
    final_vector: torch.Tensor | None = None

    @property
    def final(self) -> RoundMetrics:
        return self.rounds[-1]

    def rows(self) -> list[dict]:
        return [asdict(r) for r in self.rounds]


def _score(evaluation) -> float:
    """Consensus score, higher is better: accuracy for classification, −MSE for regression."""
    return evaluation.accuracy if evaluation.accuracy is not None else -evaluation.loss


def assign_vehicles(num_vehicles: int, num_edges: int, seed: int) -> list[list[int]]:
    """Static association: a seeded shuffle of the vehicles dealt evenly to the edges
    (BMFL §V-B: "randomly assign 10 devices to each MEC server")."""
    perm = torch.randperm(num_vehicles, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(perm[e::num_edges]) for e in range(num_edges)]


def run_simulation(
    config: SimulationConfig,
    console: Console | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
) -> SimulationResult:
    """Run ``config`` and return per-round metrics (and call ``on_round`` after each)."""
    console = console or Console()
    torch.manual_seed(config.seed)
    train, test = load_dataset(config.data.name, **config.data.options)
    labels = train.groups if config.partition.kind == "by_group" else train.y
    partition = make_partition(config.partition.kind, labels, config.vehicles, config.seed, **config.partition.options)
    vehicle_data = [train.subset(idx) for idx in partition.indices]
    edges = assign_vehicles(config.vehicles, config.edges, config.seed)
    model = create_model(config.model, **config.model_options)
    global_vec = flatten(model.state_dict())
    local_cfg = config.training.local()
    edge_rule = get_aggregator(config.aggregation.edge, **config.aggregation.edge_options)
    cloud_rule = get_aggregator(config.aggregation.cloud)
    generators = [torch.Generator().manual_seed(config.seed * 1_000_003 + v) for v in range(config.vehicles)]
    accountants = [PrivacyAccountant(config.training.delta, config.training.accountant) for _ in range(config.vehicles)]
    select_gen = torch.Generator().manual_seed(config.seed + 17)
    result = SimulationResult(config)
    d = global_vec.numel()

    progress = Progress(
        TextColumn("[bold]round {task.fields[round]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True,
    )
    with progress:
        task = progress.add_task("training", total=None, round=0)
        for r in range(1, config.rounds + 1):
            start = time.perf_counter()
            selected = [
                sorted(members[i] for i in torch.randperm(len(members), generator=select_gen)[: math.ceil(config.fraction * len(members))].tolist())
                for members in edges
            ]
            total = sum(len(s) for s in selected)
            progress.reset(task, total=total, round=r, description="local training")
            edge_vecs, edge_sizes, edge_scores = [], [], {}
            for edge_id, members in enumerate(selected):
                uploads, sizes = [], []
                for v in members:
                    load_vector(model, global_vec)
                    train_local(model, vehicle_data[v], local_cfg, generators[v], accountants[v])
                    uploads.append(flatten(model.state_dict()))
                    sizes.append(len(vehicle_data[v]))
                    progress.advance(task)
                if not uploads:
                    continue
                agg = edge_rule(torch.stack(uploads), torch.tensor(sizes), global_vec, round_index=r)
                edge_vecs.append(agg.aggregate)
                edge_sizes.append(float(sum(s for s, w in zip(sizes, agg.weights.tolist()) if w > 0)))
                edge_scores[edge_id] = evaluate(load_vector(model, agg.aggregate), test)
            cloud = cloud_rule(torch.stack(edge_vecs), torch.tensor(edge_sizes), global_vec, round_index=r)
            global_vec = cloud.aggregate
            ev = evaluate(load_vector(model, global_vec), test)
            eps = [a.epsilon() for a in accountants if a.steps] if local_cfg.dp and local_cfg.noise_multiplier > 0 else []
            metrics = RoundMetrics(
                round=r,
                accuracy=ev.accuracy,
                loss=ev.loss,
                mae=ev.mae,
                edge_accuracies=[e.accuracy if e.accuracy is not None else e.loss for e in edge_scores.values()],
                leader=select_leader({e: to_fixed(_score(ev)) for e, ev in edge_scores.items()}),
                trainers=total,
                epsilon_max=max(eps) if eps else None,
                epsilon_mean=sum(eps) / len(eps) if eps else None,
                upstream_bytes_cloud=d * len(edge_vecs) * BYTES_PER_FLOAT,
                upstream_bytes_flat=d * total * BYTES_PER_FLOAT,
                wall_time_s=time.perf_counter() - start,
            )
            result.rounds.append(metrics)
            if on_round:
                on_round(metrics)
            if config.target_accuracy is not None and ev.accuracy is not None and ev.accuracy >= config.target_accuracy:
                break
    result.epsilons = {v: a.epsilon() for v, a in enumerate(accountants) if a.steps}
    result.final_vector = global_vec
    return result
