"""What ``GET /tasks`` and ``GET /tasks/{id}`` return, assembled from state and chain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bmfl.incentives import SCALE
from bmfl.protocol.schemas import TaskSpec
from chain.tasks import TaskInfo


class ChainView(BaseModel):
    status: str
    phase: str
    round: int
    max_rounds: int
    escrow_wei: int
    block_reward_wei: int
    last_accuracy: float
    publisher: str


class TaskView(BaseModel):
    task_id: int
    status: str
    detail: str
    spec: TaskSpec
    chain: ChainView
    rounds_finished: int
    accuracy: list[float]
    leaders: list[int | None]  # None: fewer than three edges scored, no consensus
    flagged: dict[int, list[str]]
    epsilon: dict[str, float]
    epsilon_max: float | None


def chain_view(info: TaskInfo) -> ChainView:
    return ChainView(
        status=info.status.name.lower(), phase=info.phase.name.lower(), round=info.round, max_rounds=info.max_rounds,
        escrow_wei=info.escrow, block_reward_wei=info.block_reward, last_accuracy=info.last_accuracy / SCALE,
        publisher=info.publisher,
    )  # fmt: skip


def task_view(task: dict[str, Any], info: TaskInfo, rounds: list[dict[str, Any]]) -> TaskView:
    epsilon: dict[str, float] = {}
    for r in rounds:  # ε is cumulative: the latest report per vehicle is its spend so far
        epsilon.update({t["address"]: t["epsilon"] for t in r["trainers"] if t["epsilon"] is not None})
    return TaskView(
        task_id=task["task_id"], status=task["status"], detail=task["detail"], spec=task["spec"], chain=chain_view(info),
        rounds_finished=len(rounds), accuracy=[r["accuracy"] for r in rounds], leaders=[r["leader"] for r in rounds],
        flagged={r["round"]: r["flagged"] for r in rounds}, epsilon=epsilon,
        epsilon_max=max(epsilon.values()) if epsilon else None,
    )  # fmt: skip
