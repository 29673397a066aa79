"""``/ui``: the read-only dashboard (Tasks, Task, Stack pages; assets in
``cloud_aggregator/ui/``, Plotly from the ``plotly`` package, nothing from elsewhere) and
``GET /stack``, the operator's view it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import plotly
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from fastapi import Path as PathParam

from service_kit.openapi_docs import UNAVAILABLE, problem_responses
from service_kit.problems import ProblemError
from cloud_aggregator.context import Cloud, get_cloud
from cloud_aggregator.stack_view import StackView

UI_DIR = Path(__file__).parents[1] / "ui"
ASSETS = {
    "app.js": UI_DIR / "app.js",
    "style.css": UI_DIR / "style.css",
    "plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
}
# the page may load from its own origin only, whatever the HTML says
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-eval'"

router = APIRouter()
pages = APIRouter(prefix="/ui", include_in_schema=False)


def _page() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": CSP})


@pages.get("")
@pages.get("/")
@pages.get("/stack")
def tasks_page() -> FileResponse:
    return _page()


@pages.get("/tasks/{task_id}")
def task_page(task_id: int) -> FileResponse:
    return _page()


@pages.get("/assets/{name}")
def asset(name: Annotated[str, PathParam(max_length=32)]) -> FileResponse:
    if name not in ASSETS:
        raise ProblemError(404, "unknown_asset", f"no dashboard asset {name!r}")
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(ASSETS[name], media_type=kind, headers={"Cache-Control": "max-age=3600"})


@router.get("/stack", response_model=StackView, tags=["operations"], responses=problem_responses(UNAVAILABLE))
def get_stack(cloud: Annotated[Cloud, Depends(get_cloud)]) -> StackView:
    """The stack at a glance: each edge's health, latest round per task, associations and
    upload refusals by reason (read from its ``/healthz`` and ``/metrics``), the chain
    head, the gas spent by every task's transactions, and the blob store; computed at most
    once every 2 s, whoever asks (``StackCache``)."""
    return cloud.stack.get(cloud)


router.include_router(pages)
