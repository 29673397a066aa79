"""What ``GET /stack`` returns: each edge's health and Prometheus counters (read by the
cloud, so the dashboard's page talks to the cloud only), the chain head, the gas every
task's transactions cost, and the blob store."""

from __future__ import annotations

import threading
import time

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from bmfl.blobs.store import BlobStore


class EdgeStatus(BaseModel):
    index: int
    address: str
    url: str
    healthy: bool = Field(description="its /healthz answered 200 within 2 s")
    detail: str = Field("", description="why it is not healthy")
    block: int | None = Field(None, description="the chain head its node sees")
    last_round: dict[str, int] = Field(default_factory=dict, description="task id → latest round it opened")
    associations: dict[str, int] = Field(default_factory=dict, description="associations by outcome (associated, handed_over)")
    uploads_accepted: int = 0
    refusals: dict[str, int] = Field(default_factory=dict, description="update uploads refused, by reason")


class BlobStoreStatus(BaseModel):
    kind: str = Field(description="local (a directory) or kubo (an IPFS node)")
    location: str
    blobs: int | None = Field(None, description="blobs held (local store only)")
    bytes: int | None = Field(None, description="their total size (local store only)")


class StackView(BaseModel):
    cloud: str = Field(description="the cloud's chain address")
    chain_id: int
    block: int = Field(description="chain head")
    gas_wei: int = Field(description="gas paid by every transaction of every published task")
    tasks: int
    edges: list[EdgeStatus]
    blob_store: BlobStoreStatus


def _samples(metrics_text: str) -> dict[str, dict[str, float]]:
    """metric name → {its single label's value → sample}."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.setdefault(s.name, {})[next(iter(s.labels.values()), "")] = s.value
    return out


def edge_status(http: httpx.Client, index: int, address: str, url: str) -> EdgeStatus:
    status = EdgeStatus(index=index, address=address, url=url, healthy=False)
    try:
        health = http.get(url + "/healthz")
        metrics = http.get(url + "/metrics")
    except httpx.HTTPError as exc:
        status.detail = f"unreachable: {exc.__class__.__name__}"
        return status
    if health.status_code != 200:
        status.detail = f"/healthz answered {health.status_code}"
        return status
    status.healthy, status.block = True, health.json().get("block")
    samples = _samples(metrics.text) if metrics.status_code == 200 else {}
    uploads = samples.get("bmfl_edge_uploads_total", {})
    status.uploads_accepted = int(uploads.pop("accepted", 0))
    status.refusals = {reason: int(n) for reason, n in sorted(uploads.items())}
    status.associations = {k: int(v) for k, v in samples.get("bmfl_edge_associations_total", {}).items()}
    status.last_round = {k: int(v) for k, v in samples.get("bmfl_edge_task_round", {}).items()}
    return status


def blob_store_status(store: BlobStore, spec: str) -> BlobStoreStatus:
    if spec.startswith("kubo:"):
        return BlobStoreStatus(kind="kubo", location=spec.removeprefix("kubo:"))
    root = getattr(store, "root", None)  # a LocalBlobStore's directory
    files = [p for p in root.glob("blobs/*/*") if p.is_file()] if root is not None else []
    return BlobStoreStatus(kind="local", location=spec, blobs=len(files), bytes=sum(p.stat().st_size for p in files))


def stack_view(cloud: Any) -> StackView:
    """``cloud`` is the running :class:`cloud_aggregator.context.Cloud`."""
    chain = cloud.ctx.chain
    tasks = [t["task_id"] for t in cloud.ctx.state.tasks()]
    with httpx.Client(timeout=2.0) as http:
        edges = [edge_status(http, e.info.index, e.info.address, e.info.url) for e in cloud.ctx.edges]
    return StackView(
        cloud=chain.address, chain_id=chain.chain_id, block=chain.w3.eth.block_number,
        gas_wei=sum(cloud.ledger.read(t)[0].gas_wei for t in tasks), tasks=len(tasks), edges=edges,
        blob_store=blob_store_status(cloud.ctx.store, cloud.settings.blob_store),
    )  # fmt: skip


STACK_TTL_S = 2.0
"""How long one :func:`stack_view` serves ``GET /stack``: each computation calls every
edge, so an open endpoint must not multiply that by the requests it gets."""


class StackCache:
    """At most one :func:`stack_view` per ``ttl_s``, shared by concurrent requests."""

    def __init__(self, ttl_s: float = STACK_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._view: StackView | None = None
        self._at = 0.0

    def get(self, cloud: Any) -> StackView:
        with self._lock:
            if self._view is None or time.monotonic() - self._at >= self.ttl_s:
                self._view, self._at = stack_view(cloud), time.monotonic()
            return self._view
