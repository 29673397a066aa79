"""``create_app(settings)``: the cloud's FastAPI app (OpenAPI at ``/docs``, dashboard at ``/ui``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bmfl.blobs.gateway import gateway_router
from service_kit.blob_access import open_store
from service_kit.bounded import install_body_limits
from service_kit.docs import NO_CDN_DOCS, install_docs
from service_kit.logs import install_access_log
from service_kit.observability import Metrics, observability_router
from service_kit.problems import install_problem_handlers
from cloud_aggregator.context import Cloud
from cloud_aggregator.routers import edges, tasks, ui
from cloud_aggregator.settings import CloudSettings


def create_app(settings: CloudSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cloud = app.state.cloud = Cloud.start(settings, store, metrics)
        try:
            yield
        finally:
            cloud.orchestrator.shutdown()

    app = FastAPI(
        title="BMFL cloud aggregator",
        description="Task publishing, round orchestration across the edges, second aggregation, payouts.",
        lifespan=lifespan,
        **NO_CDN_DOCS,
    )
    install_docs(app)
    store, metrics = open_store(settings.blob_store), Metrics("cloud")
    install_problem_handlers(app, metrics)
    app.include_router(gateway_router(store))
    app.include_router(observability_router(metrics, lambda: app.state.cloud.health()))
    app.include_router(tasks.router)
    app.include_router(edges.router)
    app.include_router(ui.router)  # the dashboard under /ui, and GET /stack
    blobs = {"initial_model": settings.max_blob_bytes, "test_set": settings.max_blob_bytes}
    install_body_limits(
        app,
        settings.max_json_bytes,
        {("POST", "/tasks"): blobs, ("POST", "/tasks/validate"): blobs, ("PUT", "/tasks/{task_id}/test-set"): {"test_set": settings.max_blob_bytes}},
    )
    install_access_log(app)  # outermost: sees every request, refused ones too
    return app
