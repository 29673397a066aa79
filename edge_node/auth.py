"""Signed internal requests (cloud → edge, edge → edge): a route class that recovers
the signer of ``X-BMFL-Signature`` over the raw body before FastAPI parses it, checks
its role on chain, and leaves it in ``request.state.signer``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from bmfl.protocol.signing import SIGNATURE_HEADER, SignatureError, request_signer
from service_kit.openapi_docs import SignedDocsRoute, problem_responses
from service_kit.problems import ProblemError
from edge_node.node import EdgeNode

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def cloud_only(node: EdgeNode) -> Callable[[str], None]:
    """Authorizes the registry's cloud account."""

    def check(signer: str) -> None:
        cloud = node.chain.registry.cloud()
        if signer != cloud:
            raise ProblemError(403, "not_cloud", f"signed by {signer}, not the registry's cloud {cloud}")

    check.reason = "not_cloud"  # type: ignore[attr-defined]  # documented in the OpenAPI schema
    return check


def edges_only(node: EdgeNode) -> Callable[[str], None]:
    """Authorizes any active edge on chain."""

    def check(signer: str) -> None:
        if not node.chain.registry.is_edge(signer):
            raise ProblemError(403, "not_edge", f"signed by {signer}, not an edge on chain")

    check.reason = "not_edge"  # type: ignore[attr-defined]
    return check


def signed_route(node: EdgeNode, authorize: Callable[[str], None]) -> type[APIRoute]:
    """An ``APIRoute`` class admitting requests signed by an account ``authorize`` accepts
    (401 ``unsigned`` / ``bad_signature``, 403 from ``authorize``)."""

    class SignedRoute(SignedDocsRoute):
        bmfl_signed = True  # service_kit.bounded checks the headers before the body is read

        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            kwargs["responses"] = problem_responses({403: [authorize.reason]}) | (kwargs.get("responses") or {})  # type: ignore[attr-defined]
            super().__init__(path, endpoint, **kwargs)

        def get_route_handler(self) -> Handler:
            handle = super().get_route_handler()

            async def signed(request: Request) -> Response:
                body = await request.body()  # cached: the handler parses the same bytes
                if SIGNATURE_HEADER.lower() not in request.headers:
                    raise ProblemError(401, "unsigned", f"missing {SIGNATURE_HEADER}")
                try:
                    signer = request_signer(node.chain_id, request.method, request.url.path, body, request.headers)
                except SignatureError as exc:
                    raise ProblemError(401, "bad_signature", str(exc)) from None
                await run_in_threadpool(authorize, signer)
                request.state.signer = signer
                return await handle(request)

            return signed

    return SignedRoute
