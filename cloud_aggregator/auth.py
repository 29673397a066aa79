"""Signed publisher requests: ``POST /tasks`` and ``PUT /tasks/{id}/test-set`` carry
``X-BMFL-Signature`` / ``X-BMFL-Time`` over the raw body (``bmfl.protocol.signing``) and
must come from the task's publisher on chain. Without this, anyone who can rebuild an
escrowed task's initial model (a seeded initialisation) could publish it first with a
spec of their own (no filters, another seed) and lock the publisher out."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response

from bmfl.protocol.signing import SIGNATURE_HEADER, SignatureError, request_signer
from service_kit.openapi_docs import SignedDocsRoute
from service_kit.problems import ProblemError
from chain.tasks import Status
from cloud_aggregator.context import Cloud

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class SignedRoute(SignedDocsRoute):
    """Recovers the signer over the raw body before FastAPI parses it (401 ``unsigned`` /
    ``bad_signature``) and leaves it in ``request.state.signer``."""

    bmfl_signed = True  # service_kit.bounded checks the headers before the body is read

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def signed(request: Request) -> Response:
            body = await request.body()  # cached: the form is parsed from the same bytes
            if SIGNATURE_HEADER.lower() not in request.headers:
                raise ProblemError(401, "unsigned", f"missing {SIGNATURE_HEADER}")
            chain_id = request.app.state.cloud.ctx.chain.chain_id
            try:
                request.state.signer = request_signer(chain_id, request.method, request.url.path, body, request.headers)
            except SignatureError as exc:
                raise ProblemError(401, "bad_signature", str(exc)) from None
            return await handle(request)

        return signed


def check_publisher(cloud: Cloud, task_id: int, signer: str) -> None:
    """404 ``unknown_task`` if the chain has no such task, 403 ``not_publisher`` unless
    ``signer`` created it."""
    info = cloud.ctx.chain.tasks.task(task_id)
    if info.status == Status.NONE:
        raise ProblemError(404, "unknown_task", f"no task {task_id} on chain")
    if info.publisher != signer:
        raise ProblemError(403, "not_publisher", f"signed by {signer}; task {task_id} was created by {info.publisher}")
