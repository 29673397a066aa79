"""Read-only auditor: rebuild a task's contributions, consensus and payouts from chain
data alone (events and views) and check them against what the contract credited."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from web3 import Web3

from bmfl.incentives import Payouts, mean_accuracy, split_payouts
from chain.deploy import Deployment
from chain.registry import RegistryClient
from chain.tasks import TaskInfo, TasksClient, unpack_records


class PayoutAudit(BaseModel):
    """Recomputed payouts next to the contract's credits (addresses as keys)."""

    model_config = ConfigDict(frozen=True)

    task_id: int
    recomputed: dict[str, int]
    credited: dict[str, int]
    dust: int
    returned: int

    @property
    def agrees(self) -> bool:
        """Whether every credit equals the recomputation, to the wei."""
        return self.recomputed == self.credited and self.dust == self.returned


class Auditor:
    """Queries a deployment without ever sending a transaction."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.tasks = TasksClient(w3, deployment.tasks)
        self.registry = RegistryClient(w3, deployment.registry)
        self.from_block = deployment.block_number

    def task(self, task_id: int) -> TaskInfo:
        """The task's current state."""
        return self.tasks.task(task_id)

    def contributions(self, task_id: int) -> dict[int, dict[int, int]]:
        """C_{m,ℓ} (edge → vehicle → summed θ) rebuilt from ``RoundRecorded`` logs."""
        out: dict[int, dict[int, int]] = {}
        for ev in self.tasks.events("RoundRecorded", self.from_block, taskId=task_id):
            per = out.setdefault(ev.edge, {})  # type: ignore[attr-defined]
            for rec in unpack_records(ev.records):  # type: ignore[attr-defined]
                per[rec.vehicle] = per.get(rec.vehicle, 0) + (0 if rec.malicious else rec.theta)
        return out

    def recompute(self, task_id: int) -> Payouts:
        """``bmfl.incentives.split_payouts`` over the task's logs."""
        info = self.task(task_id)
        leaders: list[int] = []
        per_round: dict[int, list[int]] = {}
        for ev in self.tasks.events("LeaderElected", self.from_block, taskId=task_id):
            leaders.append(ev.leader)  # type: ignore[attr-defined]
            recorded = {r.edge for r in self.tasks.events("RoundRecorded", self.from_block, taskId=task_id, round=ev.round)}  # type: ignore[attr-defined]
            for e in recorded:
                per_round.setdefault(e, []).append(ev.medians[e])  # type: ignore[attr-defined]
        accuracy = {e: mean_accuracy(a) for e, a in per_round.items()}
        return split_payouts(info.escrow, info.block_reward, leaders, accuracy, self.contributions(task_id))

    def audit_payouts(self, task_id: int) -> PayoutAudit:
        """Compare the recomputation with the ``PayoutCredited`` / ``TaskFinished`` logs."""
        ref = self.recompute(task_id)
        credited: dict[str, int] = {}
        for ev in self.tasks.events("PayoutCredited", self.from_block, taskId=task_id):
            credited[ev.payee] = credited.get(ev.payee, 0) + ev.amount  # type: ignore[attr-defined]
        recomputed = {self.registry.vehicle_at(v): w for v, w in ref.vehicles.items() if w}
        finished = self.tasks.events("TaskFinished", self.from_block, taskId=task_id)
        returned = finished[0].returned if finished else -1  # type: ignore[attr-defined]
        return PayoutAudit(task_id=task_id, recomputed=recomputed, credited=credited, dust=ref.dust, returned=returned)
