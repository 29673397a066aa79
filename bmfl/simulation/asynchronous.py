"""The asynchronous simulation (``asynchrony.mode = "async"``): BAFDP-style buffered
updates with bounded staleness on a simulated wall clock (``bmfl.rounds.asynchronous``).

Every vehicle (all but the ideal filter's attackers) trains from the newest global
model, w_t of version t, as soon as it is free; its job ends ``ComputeClock.duration``
simulated seconds later with a report carrying t. Reports fill one buffer at the cloud;
when it holds S reports, or ``timeout_s`` after the previous update, the edge rule of
the registry (filters then rule) runs on it with the staleness weighting, giving
w_{t+1}, and the buffer's vehicles start again from w_{t+1}. Each update is one row of
metrics (``round`` = t + 1, ``sim_time_s`` its simulated time).

Not modelled here (yet): per-edge buffers, the edges' consensus and leader (``leader``
is None, no block rewards, every edge's S_ℓ = 1 in the payout split), blob traffic (the byte fields stay 0).
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from dataclasses import asdict
from typing import Callable

import torch
from rich.progress import Progress

from bmfl.attacks import shape_edge_uploads
from bmfl.incentives import to_fixed
from bmfl.params import flatten, load_vector
from bmfl.rounds import stop_reached, target_fixed
from bmfl.rounds.asynchronous import STALE, BufferOutcome, Report, apply_buffer, buffer_ready
from bmfl.simulation.assignment import associations
from bmfl.simulation.config import SimulationConfig
from bmfl.simulation.runner import RoundMetrics, Setup, SimulationResult, prepare
from bmfl.simulation.vehicles import InProcess
from bmfl.training import evaluate


class _Fleet:
    """Vehicles' jobs in flight: who trains from which version, and when each ends."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.pending: list[tuple[float, int, Report]] = []  # (end time, vehicle, report): a heap
        self.jobs: dict[int, int] = defaultdict(int)

    def start(self, vehicles: list[int], now: float, model: torch.Tensor, previous: torch.Tensor | None,
              version: int, edge_of) -> None:  # fmt: skip
        """``vehicles`` train from ``model`` (version ``version``) from time ``now``."""
        s = self.setup
        for chunk in InProcess(s.fleet).train(vehicles, version + 1, model, previous, edge_of):
            for v, upload in zip(chunk.vehicles, chunk.uploads):
                self.jobs[v] += 1
                end = now + s.clock.duration(v, chunk.work[v], self.jobs[v])
                heapq.heappush(self.pending, (end, v, Report(upload, model, version)))


def run_async(
    config: SimulationConfig,
    progress: Progress,
    on_round: Callable[[RoundMetrics], None] | None = None,
    keep_models: bool = False,
) -> SimulationResult:
    """Run ``config`` asynchronously for up to ``rounds`` global updates (or to its
    target accuracy); per update the same metrics as a synchronous round."""
    s = prepare(config)
    config = s.config
    spec = config.asynchrony
    attack, attackers = s.attack, s.attackers
    result = SimulationResult(config, attackers=sorted(attackers))
    contributions: dict[int, dict[int, int]] = defaultdict(dict)
    assoc = associations(config)
    edge_of = next(assoc)
    participants = [v for v in range(config.vehicles) if v not in s.excluded]
    global_vec = flatten(s.model.state_dict()).cpu()
    previous_vec = None
    fleet = _Fleet(s)
    fleet.start(participants, 0.0, global_vec, previous_vec, 0, edge_of)
    buffer: dict[int, Report] = {}
    version, now, last_update, started = 0, 0.0, 0.0, time.perf_counter()
    rounds_task = progress.add_task(f"{config.name}: async updates", total=config.rounds)
    while version < config.rounds and fleet.pending:
        deadline = last_update + spec.timeout_s if buffer and spec.timeout_s is not None else float("inf")
        if fleet.pending[0][0] <= deadline:
            now, v, report = heapq.heappop(fleet.pending)
            buffer[v] = report
        else:
            now = deadline
        if not buffer_ready(len(buffer), now - last_update, spec, len(participants)):
            continue
        if attack is not None and attack.colludes:
            shaped = shape_edge_uploads(
                attack, {v: r.upload for v, r in buffer.items()}, attackers, 0, global_vec, version + 1, config.seed,
                previous_vec,
            )  # fmt: skip
            buffer = {v: Report(shaped[v], r.base, r.version) for v, r in buffer.items()}
        outcome = apply_buffer(s.edge_agg, buffer, s.sizes, global_vec, version, spec)
        if outcome.model is not None:
            previous_vec, global_vec = global_vec, outcome.model
        version += 1
        for v, theta in outcome.contributions.items():  # θ·s(τ), as an edge records it
            edge = int(edge_of[v])
            contributions[edge][v] = contributions[edge].get(v, 0) + to_fixed(theta)
        ev = evaluate(load_vector(s.model, global_vec), s.test)
        metrics = _metrics(version, ev, outcome, edge_of, s, now, time.perf_counter() - started)
        result.record(
            metrics, participation={v: (int(edge_of[v]), to_fixed(x)) for v, x in outcome.contributions.items()},
            selected={0: sorted(buffer)}, verdicts={0: outcome.verdicts}, leader=None, transfers=[],
            model=global_vec if keep_models else None,
        )  # fmt: skip
        progress.advance(rounds_task)
        if on_round:
            on_round(metrics)
        if stop_reached(version, config.rounds, target_fixed(config.target_accuracy), to_fixed(ev.accuracy or 0.0), True):
            break
        restart, buffer, last_update, started = sorted(buffer), {}, now, time.perf_counter()
        edge_of = next(assoc)
        fleet.start(restart, now, global_vec, previous_vec, version, edge_of)
    progress.remove_task(rounds_task)
    # no consensus: every edge scores 1 (S_ℓ equal), no block rewards
    result.settle(s.fleet.engines, global_vec, contributions, [], {e: 1 for e in contributions})
    return result


def _metrics(version: int, ev, outcome: BufferOutcome, edge_of, s: Setup, now: float, wall: float) -> RoundMetrics:
    """One update's row (``attacker_weight``: the update's rate × the attackers' θ)."""
    attack, attackers = s.attack, s.attackers
    flags = [(v in attackers, x.flagged) for v, x in outcome.verdicts.items()]
    n_att = sum(a for a, _ in flags)
    att_flagged = sum(a and f for a, f in flags)
    kept_theta = sum(x.theta for v, x in outcome.verdicts.items() if v in attackers)
    eps = [e.epsilon() for e in s.fleet.engines.values() if e.steps] if s.private else []
    return RoundMetrics(
        round=version,
        accuracy=ev.accuracy,
        loss=ev.loss,
        mae=ev.mae,
        edge_accuracies=[],
        leader=None,
        trainers=len(outcome.verdicts),
        epsilon_max=max(eps) if eps else None,
        epsilon_mean=sum(eps) / len(eps) if eps else None,
        upstream_bytes_cloud=0,
        upstream_bytes_flat=0,
        wall_time_s=wall,
        attack_success_rate=None if attack is None else attack.success_rate(s.model, s.test),
        attackers_selected=n_att,
        attackers_flagged=att_flagged,
        attackers_missed=n_att - att_flagged,
        honest_flagged=sum((not a) and f and outcome.verdicts[v].reason != STALE
                           for (a, f), v in zip(flags, outcome.verdicts)),  # fmt: skip
        attacker_weight=outcome.rate * kept_theta,
        sim_time_s=now,
        stale_refused=sum(x.reason == STALE for x in outcome.verdicts.values()),
        staleness_mean=sum(outcome.staleness.values()) / len(outcome.staleness),
        uploads=[{"vehicle": v, "edge": int(edge_of[v]), "attacker": v in attackers, "staleness": outcome.staleness[v], **asdict(x)}
                 for v, x in outcome.verdicts.items()],  # fmt: skip
    )
