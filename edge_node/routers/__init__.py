"""The edge's HTTP resources, one router each: associations (vehicles, handover),
rounds (cloud-facing task and round steps, public progress), vehicles (tasks,
assignment, update uploads); and the bounded path parameters they share."""

from typing import Annotated

from fastapi import Path

from bmfl.protocol.schemas import MAX_ROUND, MAX_TASK_ID

TaskPath = Annotated[int, Path(ge=1, le=MAX_TASK_ID, description="task id on chain")]
RoundPath = Annotated[int, Path(alias="round", ge=1, le=MAX_ROUND, description="1-based round")]
