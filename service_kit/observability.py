"""``/healthz`` and Prometheus ``/metrics`` for every service."""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """One registry per app, so several apps can live in one process (tests)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.service = service

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"bmfl_{name}", doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"bmfl_{name}", doc, labels, registry=self.registry)


def observability_router(metrics: Metrics, health: Callable[[], dict]) -> APIRouter:
    """``health`` returns the body of ``/healthz`` and raises when the service is unhealthy."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> dict:
        return {"service": metrics.service, "status": "ok", **health()}

    @router.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
