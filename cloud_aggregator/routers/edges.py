"""``/edges``: the edge directory vehicles use to find their nearest edge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from bmfl.protocol.schemas import EdgeInfo
from cloud_aggregator.context import Cloud, get_cloud

router = APIRouter(prefix="/edges", tags=["edges"])


@router.get("", response_model=list[EdgeInfo])
def list_edges(cloud: Annotated[Cloud, Depends(get_cloud)]) -> list[EdgeInfo]:
    return [e.info for e in cloud.ctx.edges]
