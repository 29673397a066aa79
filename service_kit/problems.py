"""Errors as ``{"reason", "detail"}`` bodies (:class:`bmfl.protocol.schemas.Problem`).

Raise :class:`ProblemError` anywhere in a request; the handlers installed by
:func:`install_problem_handlers` turn it, FastAPI's validation errors and Starlette's
HTTP errors into a 4xx body with a stable machine-readable ``reason``, and an
unreachable chain node or blob store into a 503 (``chain_unavailable`` /
``blob_store_unavailable``) instead of a 500.
"""

from __future__ import annotations

import sys

import requests
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bmfl.blobs.errors import RemoteError
from chain.json_rpc import NodeUnreachable
from service_kit.observability import Metrics

HTTP_REASONS = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 503: "unavailable"}
RECURSION_LIMIT = 10_000
"""py_ecc (imported by web3) raises Python's recursion limit to 100,000; a JSON body
nested that deep then overflows the C stack and kills the process (docs/security.md)."""


class ProblemError(Exception):
    """An HTTP error with a reason code (e.g. ``not_selected``) and a human detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


def _body(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail}, status_code=status, headers=headers)


def install_problem_handlers(app: FastAPI, metrics: Metrics | None = None) -> None:
    """Problem bodies for every error, and a recursion limit the stack can hold; an
    unreachable chain node or blob store is counted in ``metrics``."""
    sys.setrecursionlimit(min(sys.getrecursionlimit(), RECURSION_LIMIT))

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return _body(exc.status, exc.reason, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _body(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        reason = HTTP_REASONS.get(exc.status_code, f"http_{exc.status_code}")
        return _body(exc.status_code, reason, str(exc.detail), exc.headers)

    async def _chain_down(_: Request, exc: Exception) -> JSONResponse:
        if metrics is not None:
            metrics.chain_errors.labels("unreachable").inc()
        return _body(503, "chain_unavailable", f"the chain node did not answer: {type(exc).__name__}")

    app.add_exception_handler(requests.RequestException, _chain_down)  # web3's provider
    app.add_exception_handler(NodeUnreachable, _chain_down)  # chain.json_rpc (the edge's head reads)

    @app.exception_handler(RemoteError)
    async def _store_down(_: Request, exc: RemoteError) -> JSONResponse:
        if metrics is not None:
            metrics.blob_errors.labels("unreachable").inc()
        return _body(503, "blob_store_unavailable", str(exc))
