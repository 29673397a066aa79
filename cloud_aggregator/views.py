"""What ``GET /tasks`` and ``GET /tasks/{id}`` return, assembled from state and chain.
Field names are explained in docs/protocol.md ("Glossary")."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from bmfl.incentives import SCALE
from bmfl.protocol.schemas import TaskSpec
from chain.ledger import Ledger, Milestones
from chain.tasks import TaskInfo


class ChainView(BaseModel):
    status: str = Field(description="on chain: active, finished or cancelled")
    phase: str = Field(description="the current round's phase: idle, training, scoring or finalized")
    round: int = Field(description="the current (or last) round on chain")
    max_rounds: int = Field(description="K")
    deadline: int = Field(0, description="chain time (unix s) by which the current step must be done")
    escrow_wei: int
    block_reward_wei: int
    last_accuracy: float = Field(description="the last finalized round's global accuracy (median of the edges')")
    publisher: str


class RoundSummary(BaseModel):
    """One finished round in a publisher's words (details: ``GET /tasks/{id}/rounds/{r}``)."""

    round: int
    accuracy: float = Field(description="global model's test accuracy: median of the edges' evaluations")
    loss: float | None = None
    leader_edge: int | None = Field(description="edge index elected leader (it earns the block reward); None: no quorum")
    consensus_scores: list[float] = Field(
        description="per edge index: the upper median of the accuracies the other edges gave its model (the round record's medians)"
    )
    selected: int | None = Field(description="vehicles the edges selected to train")
    received: int | None = Field(description="selected vehicles whose update reached an edge")
    flagged: int = Field(description="updates the filters rejected as malicious (weight 0)")
    started_at: float | None = Field(description="unix time the cloud opened the round")
    finished_at: float | None = Field(description="unix time the round was finalized on chain")
    wall_time_s: float
    bytes_moved: int | None = Field(None, description="blob bytes every party sent in the round (each transfer once)")
    bytes_trainers: int | None = Field(
        None, description="blob bytes the trainers sent and received (their updates and w^{r-1})"
    )
    epsilon_max: float | None = Field(
        None, description="the largest cumulative ε a trainer of this round reported (None: none reported)"
    )
    rolled_back_to: int | None = Field(
        None,
        description="the task's rollback guard refused this round's global model (its accuracy fell more than the "
        "tolerance below the best so far) and recorded that round's model again; None: the round's own model stands",
    )


class CurrentRound(BaseModel):
    """The round being trained now (live counts while the cloud waits for uploads)."""

    round: int
    selected: int
    received: int
    started_at: float


class Times(Milestones):
    first_round_started_at: float | None = Field(description="unix time round 1 opened")
    last_round_finished_at: float | None = Field(description="unix time the last finished round was finalized")


class TaskView(BaseModel):
    task_id: int
    status: str = Field(description="the cloud's: ready, awaiting_test_set, running, finished, cancelled or failed")
    detail: str = Field(description="why it failed, or 'every payee settled' once payouts are credited")
    spec: TaskSpec
    chain: ChainView
    rounds_finished: int
    accuracy: list[float] = Field(description="global accuracy per finished round")
    leaders: list[int | None] = Field(description="leader edge per round; None: fewer than three edges scored, no consensus")
    flagged: dict[int, list[str]] = Field(description="round → addresses of the vehicles whose update was flagged malicious")
    epsilon: dict[str, float] = Field(description="vehicle address → privacy loss ε spent so far, at the task's δ")
    epsilon_max: float | None = Field(description="the largest ε of any vehicle")
    rounds: list[RoundSummary] = Field(default_factory=list)
    current: CurrentRound | None = Field(None, description="the round in training, with live selected / received counts")
    eta_s: float | None = Field(None, description="estimated seconds until the last round finishes (rounds left × mean round time)")
    times: Times | None = Field(None, description="milestones (GET /tasks/{id} only)")
    ledger: Ledger | None = Field(None, description="escrow, credits, claims and gas (GET /tasks/{id} only)")
    bytes_moved: int = Field(0, description="blob bytes every party sent, summed over the finished rounds")


def chain_view(info: TaskInfo) -> ChainView:
    return ChainView(
        status=info.status.name.lower(), phase=info.phase.name.lower(), round=info.round, max_rounds=info.max_rounds,
        deadline=info.deadline, escrow_wei=info.escrow, block_reward_wei=info.block_reward,
        last_accuracy=info.last_accuracy / SCALE, publisher=info.publisher,
    )  # fmt: skip


def _bytes(traffic: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(bytes every party sent, bytes the trainers sent and received) of a round's
    ``traffic`` (``bmfl.rounds.traffic``); None for a round recorded without it."""
    if not traffic:
        return None, None
    parties = [*traffic["vehicles"].values(), *traffic["edges"].values(), traffic["cloud"]]
    trainers = sum(int(v["up"]) + int(v["down"]) for v in traffic["vehicles"].values())
    return int(sum(p["up"] for p in parties)), trainers


def round_summary(r: dict[str, Any]) -> RoundSummary:
    moved, trainers = _bytes(r.get("traffic"))
    spent = [t["epsilon"] for t in r["trainers"] if t["epsilon"] is not None]
    return RoundSummary(
        round=r["round"], accuracy=r["accuracy"], loss=r.get("loss"), leader_edge=r["leader"], consensus_scores=r["medians"],
        selected=r.get("selected"), received=r.get("received"), flagged=len(r["flagged"]), started_at=r.get("started_at"),
        finished_at=r.get("finished_at"), wall_time_s=r["wall_time_s"], bytes_moved=moved, bytes_trainers=trainers,
        epsilon_max=max(spent) if spent else None, rolled_back_to=r.get("rolled_back_to"),
    )  # fmt: skip


def eta_s(status: str, info: TaskInfo, rounds: list[dict[str, Any]], current: CurrentRound | None) -> float | None:
    """Rounds left × the mean round time so far, less what the current round already took;
    0 once the task stopped running, None before a round finished."""
    if status not in ("ready", "running"):
        return 0.0
    if not rounds:
        return None
    mean = sum(r["wall_time_s"] for r in rounds) / len(rounds)
    left = (info.max_rounds - len(rounds)) * mean
    if current is not None:
        left -= min(mean, time.time() - current.started_at)
    return max(0.0, left)


def task_view(
    task: dict[str, Any], info: TaskInfo, rounds: list[dict[str, Any]], progress: dict[str, Any] | None = None,
    ledger: Ledger | None = None, milestones: Milestones | None = None,
) -> TaskView:  # fmt: skip
    epsilon: dict[str, float] = {}
    for r in rounds:  # ε is cumulative: the latest report per vehicle is its spend so far
        epsilon.update({t["address"]: t["epsilon"] for t in r["trainers"] if t["epsilon"] is not None})
    finished = {r["round"] for r in rounds}
    current = CurrentRound(**progress) if progress and progress["round"] not in finished else None
    times = None
    if milestones is not None:
        times = Times(
            **milestones.model_dump(), first_round_started_at=rounds[0].get("started_at") if rounds else None,
            last_round_finished_at=rounds[-1].get("finished_at") if rounds else None,
        )  # fmt: skip
    summaries = [round_summary(r) for r in rounds]
    return TaskView(
        task_id=task["task_id"], status=task["status"], detail=task["detail"], spec=task["spec"], chain=chain_view(info),
        rounds_finished=len(rounds), accuracy=[r["accuracy"] for r in rounds], leaders=[r["leader"] for r in rounds],
        flagged={r["round"]: r["flagged"] for r in rounds}, epsilon=epsilon,
        epsilon_max=max(epsilon.values()) if epsilon else None, rounds=summaries,
        bytes_moved=sum(r.bytes_moved or 0 for r in summaries),
        current=current, eta_s=eta_s(task["status"], info, rounds, current), times=times, ledger=ledger,
    )  # fmt: skip
