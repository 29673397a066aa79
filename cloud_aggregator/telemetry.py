"""The cloud's Prometheus series, set by the task runners as rounds move (not when
someone reads ``/healthz``): each task's on-chain round and phase, how long rounds
take, and the chain and blob-store failures the runners meet."""

from __future__ import annotations

from service_kit.observability import Metrics
from chain.tasks import Status, TaskInfo

PHASES = ["idle", "training", "scoring", "finalized", "finished", "cancelled"]


class CloudTelemetry:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.round = metrics.gauge("task_round", "current on-chain round per task", ("task",))
        self.phase = metrics.enum("task_phase", "on-chain phase of each task (finished/cancelled once over)", PHASES, ("task",))
        self.round_seconds = metrics.histogram("round_seconds", "a round from opening at the edges to finalizeRound")

    def observe(self, task_id: int, info: TaskInfo) -> None:
        """The task as the chain shows it now."""
        task = str(task_id)
        self.round.labels(task).set(info.round)
        over = {Status.FINISHED: "finished", Status.CANCELLED: "cancelled"}.get(info.status)
        self.phase.labels(task).state(over or info.phase.name.lower())
