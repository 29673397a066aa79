"""``POST /associate`` (vehicles) and ``POST /handover`` (edge → edge, signed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from bmfl.protocol.schemas import AssociateRequest, Association
from edge_node.associations import HandoverRequest, HandoverResult, associate, handover
from edge_node.auth import edges_only, signed_route
from edge_node.node import EdgeNode
from service_kit.openapi_docs import UNAVAILABLE, problem_responses

VEHICLE_CHECKS = {401: ["stale", "bad_signature"], 403: ["unregistered"], 409: ["outdated"]}
ASSOCIATE = problem_responses(UNAVAILABLE, VEHICLE_CHECKS)
HANDOVER = problem_responses(UNAVAILABLE, VEHICLE_CHECKS, {403: ["not_edge"]})  # the signer is not an edge, or not the new one


def associations_router(node: EdgeNode) -> APIRouter:
    router = APIRouter(tags=["associations"])
    signed = APIRouter(tags=["associations"], route_class=signed_route(node, edges_only(node)))

    @router.post("/associate", response_model=Association, responses=ASSOCIATE)
    def post_associate(req: AssociateRequest) -> Association:
        """Associate a registered vehicle (signed ``associate_message``); with
        ``previous_edge``, the previous edge is told to drop it."""
        return associate(node, req)

    @signed.post("/handover", response_model=HandoverResult, responses=HANDOVER)
    def post_handover(req: HandoverRequest, request: Request) -> HandoverResult:
        """(edge → edge) Drop a vehicle that associated with the signing edge."""
        return handover(node, req, request.state.signer)

    router.include_router(signed)
    return router
