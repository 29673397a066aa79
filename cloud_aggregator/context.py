"""The running cloud: settings, chain, store, state, edges and orchestrator, injected into
the routers with :func:`get_cloud`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import Request

from bmfl.blobs.store import BlobStore
from service_kit.chain_access import connect
from service_kit.observability import Metrics
from service_kit.problems import ProblemError
from chain.audit import Auditor
from chain.ledger import LedgerReader
from cloud_aggregator.audit_view import AuditCache, AuditView
from cloud_aggregator.edges import EdgeCallError, discover
from cloud_aggregator.orchestrator import CloudContext, Orchestrator
from cloud_aggregator.settings import CloudSettings
from cloud_aggregator.state import CloudState
from cloud_aggregator.stack_view import StackCache
from cloud_aggregator.telemetry import CloudTelemetry
from cloud_aggregator.views import TaskView, task_view

log = logging.getLogger("bmfl.cloud")


@dataclass
class Cloud:
    settings: CloudSettings
    ctx: CloudContext
    orchestrator: Orchestrator
    metrics: Metrics

    @classmethod
    def start(cls, settings: CloudSettings, store: BlobStore, metrics: Metrics, discovery_timeout_s: float = 60.0) -> "Cloud":
        torch.set_num_threads(settings.torch_threads)
        chain = connect(settings.rpc_url, settings.deployment, settings.private_key.get_secret_value())
        if chain.registry.cloud() != chain.address:
            raise RuntimeError(f"{chain.address} does not hold the cloud role ({chain.registry.cloud()} does)")
        deadline = time.monotonic() + discovery_timeout_s
        while True:
            try:
                edges = discover(settings.edges, chain.account, chain.chain_id, chain.registry)
                break
            except EdgeCallError as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("waiting for the edges: %s", exc)
                time.sleep(0.5)
        ctx = CloudContext(
            chain=chain, store=store, state=CloudState(settings.state_dir), edges=edges,
            round_timeout_s=settings.round_timeout_s, poll_interval_s=settings.poll_interval_s,
            telemetry=CloudTelemetry(metrics),
        )  # fmt: skip
        cloud = cls(settings, ctx, Orchestrator(ctx), metrics)
        cloud.orchestrator.resume()
        return cloud

    def __post_init__(self) -> None:
        self.metrics_published = self.metrics.counter("tasks_published_total", "tasks accepted by POST /tasks")
        chain = self.ctx.chain
        self.ledger = LedgerReader(chain.w3, chain.tasks, chain.registry, chain.deployment.block_number)
        self.audits = AuditCache(Auditor(chain.w3, chain.deployment))
        self.stack = StackCache()

    def task(self, task_id: int) -> dict[str, Any]:
        task = self.ctx.state.task(task_id)
        if task is None:
            raise ProblemError(404, "unknown_task", f"no published task {task_id}")
        return task

    def view(self, task_id: int, full: bool = False) -> TaskView:
        """The task's view; ``full`` adds its ledger and milestones (more chain reads)."""
        runner = self.orchestrator.runners.get(task_id)
        progress = dict(runner.progress) if runner is not None and runner.progress else None
        ledger = milestones = None
        if full:
            ledger, milestones = self.ledger.read(task_id)
        info = self.ctx.chain.tasks.task(task_id)
        return task_view(self.task(task_id), info, self.ctx.state.rounds(task_id), progress, ledger, milestones)

    def audit(self, task_id: int) -> AuditView:
        """The task's audit without re-execution, at the current chain head."""
        self.task(task_id)
        return self.audits.get(task_id, self.ctx.chain.w3.eth.block_number, self.ctx.store.get)

    def chain_test_set_digest(self, task_id: int) -> str:
        info = self.ctx.chain.tasks.task(task_id)
        return "0x" + info.test_set_digest.hex()

    def health(self) -> dict[str, Any]:
        return {
            "address": self.ctx.chain.address, "chain_id": self.ctx.chain.chain_id,
            "block": self.ctx.chain.w3.eth.block_number, "edges": len(self.ctx.edges),
            "tasks_running": sum(r.is_alive() for r in self.orchestrator.runners.values()),
        }  # fmt: skip


def get_cloud(request: Request) -> Cloud:
    return request.app.state.cloud
