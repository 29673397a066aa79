"""``create_app(settings)``: the edge's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bmfl.blobs.gateway import gateway_router
from service_kit.blob_access import open_store
from service_kit.bounded import install_body_limits
from service_kit.chain_access import connect
from service_kit.docs import NO_CDN_DOCS, install_docs
from service_kit.logs import install_access_log
from service_kit.observability import observability_router
from service_kit.problems import install_problem_handlers
from chain.base import ContractRevert
from edge_node.node import EdgeNode
from edge_node.rounds import RoundEngine
from edge_node.routers.associations import associations_router
from edge_node.routers.rounds import rounds_router
from edge_node.routers.vehicles import vehicles_router
from edge_node.settings import EdgeSettings
from edge_node.state import EdgeState


def create_app(settings: EdgeSettings) -> FastAPI:
    """Connect to the chain as the edge's account (which must be an active edge), open
    the blob store and the state, and mount every router."""
    torch.set_num_threads(settings.torch_threads)
    chain = connect(settings.rpc_url, settings.deployment, settings.private_key.get_secret_value())
    if not chain.registry.is_edge(chain.address):
        raise RuntimeError(f"{chain.address} is not an active edge in registry {chain.registry.address}")
    state = EdgeState(settings.state_dir / "edge.sqlite3")
    node = EdgeNode(settings, chain, open_store(settings.blob_store), state, chain.registry.edge_index(chain.address))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        node.close()
        state.close()

    app = FastAPI(title="BMFL edge node", version="1", lifespan=lifespan, **NO_CDN_DOCS)
    app.state.node = node
    install_docs(app)
    install_problem_handlers(app, node.metrics.metrics)

    @app.exception_handler(ContractRevert)
    async def _reverted(_: Request, exc: ContractRevert) -> JSONResponse:
        node.metrics.metrics.chain_errors.labels("reverted").inc()
        return JSONResponse({"reason": "chain_refused", "detail": str(exc)}, status_code=409)

    def health() -> dict:
        return {"address": node.address, "index": node.index, "x": settings.x, "y": settings.y, "block": chain.w3.eth.block_number}

    app.include_router(associations_router(node))
    app.include_router(vehicles_router(node))
    app.include_router(rounds_router(node, RoundEngine(node)))
    app.include_router(gateway_router(node.store))
    app.include_router(observability_router(node.metrics.metrics, health))
    install_body_limits(
        app,
        settings.max_json_bytes,
        {
            ("POST", "/tasks/{task_id}/rounds/{round}/updates"): {"blob": settings.max_update_bytes},
            ("PUT", "/tasks/{task_id}"): {"test_set": settings.max_test_set_bytes},
        },
        {("PUT", "/tasks/{task_id}/rounds/{round}/updates/{vehicle}"): settings.max_update_bytes},
    )
    install_access_log(app)  # outermost: sees every request, refused ones too
    return app
