"""``/healthz`` and Prometheus ``/metrics`` for every service."""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """One registry per app, so several apps can live in one process (tests). Every
    service counts its failed chain and blob-store calls where they happen."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.service = service
        self.chain_errors = self.counter("chain_errors_total", "chain calls that failed: unreachable node, reverted transaction", ("kind",))
        self.blob_errors = self.counter("blob_errors_total", "blob-store calls that failed: unreachable store, missing or bad blob", ("kind",))

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"bmfl_{name}", doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"bmfl_{name}", doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(f"bmfl_{name}", doc, labels, buckets=DURATION_BUCKETS, registry=self.registry)

    def enum(self, name: str, doc: str, states: list[str], labels: tuple[str, ...] = ()) -> Enum:
        return Enum(f"bmfl_{name}", doc, labels, states=states, registry=self.registry)


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
