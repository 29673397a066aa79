"""Vehicle association and handover (docs/architecture.md, "Mobility and handover").

A vehicle signs ``associate_message`` for the edge it joins. Each edge keeps the newest
signed association it has seen per vehicle, with this edge or another, so an older
association can never be replayed. On handover the new edge forwards the vehicle's
signed request to the old edge (found in the cloud's edge directory), which drops it.
"""

from __future__ import annotations

import logging

import httpx
from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bmfl.protocol.schemas import AssociateRequest, Association, EdgeInfo
from bmfl.protocol.signing import SignatureError, associate_message, check_fresh, signed_headers, verify
from service_kit.problems import ProblemError
from edge_node.node import EdgeNode
from edge_node.state import AssociationRow

log = logging.getLogger(__name__)
HTTP_TIMEOUT_S = 10.0


class HandoverRequest(BaseModel):
    """Body of ``POST /handover`` (edge → edge, signed by the new edge)."""

    model_config = ConfigDict(extra="forbid")

    association: AssociateRequest
    edge: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="the new edge")


class HandoverResult(BaseModel):
    vehicle: str
    released: bool = Field(description="the vehicle was associated here and is not any more")
    trainer_of: list[tuple[int, int]] = Field(
        default_factory=list,
        description="(task, round) here that selected the vehicle and that it may still report from: open rounds, and in an "
        "asynchronous task closed rounds within τ_max; it reports to the new edge now",
    )


def _check_vehicle_signature(node: EdgeNode, req: AssociateRequest, edge: str) -> str:
    vehicle = to_checksum_address(req.vehicle)
    message = associate_message(node.chain_id, vehicle, edge, req.x, req.y, req.timestamp_ms)
    try:
        verify(message, req.signature, vehicle)
    except SignatureError as exc:
        raise ProblemError(401, "bad_signature", str(exc)) from None
    return vehicle


def _check_newer(node: EdgeNode, vehicle: str, timestamp_ms: int) -> AssociationRow | None:
    known = node.state.association(vehicle)
    if known is not None and known.timestamp_ms >= timestamp_ms:
        detail = f"an association of {vehicle} signed at {known.timestamp_ms} ms is already known"
        raise ProblemError(409, "outdated", detail)
    return known


def associate(node: EdgeNode, req: AssociateRequest) -> Association:
    """Associate a registered vehicle with this edge; tell its previous edge, if any."""
    try:
        check_fresh(req.timestamp_ms)
    except SignatureError as exc:
        raise ProblemError(401, "stale", str(exc)) from None
    vehicle = _check_vehicle_signature(node, req, node.address)
    index = node.vehicle_index(vehicle)
    _check_newer(node, vehicle, req.timestamp_ms)
    released, trainer_of = None, []
    if req.previous_edge is not None and to_checksum_address(req.previous_edge) != node.address:
        released, trainer_of = _release_at_previous(node, req)
    node.state.save_association(AssociationRow(vehicle, index, node.address, req.x, req.y, req.timestamp_ms))
    node.state.adopt_trainer(index, trainer_of, lambda task_id: node.task(task_id).spec.asynchrony.reach)
    node.metrics.associations.labels("associated").inc()
    return Association(
        vehicle=vehicle, vehicle_index=index, edge=node.address, edge_index=node.index,
        released_by_previous=released,
    )  # fmt: skip


def _release_at_previous(node: EdgeNode, req: AssociateRequest) -> tuple[bool, list[tuple[int, int]]]:
    """Forward the signed association to the previous edge's ``POST /handover``; returns
    whether it released the vehicle and the open rounds it had selected the vehicle for."""
    previous = to_checksum_address(req.previous_edge)  # type: ignore[arg-type]
    if node.settings.cloud_url is None:
        log.warning("no BMFL_EDGE_CLOUD_URL: cannot locate previous edge %s", previous)
        return False, []
    try:
        reply = httpx.get(f"{node.settings.cloud_url.rstrip('/')}/edges", timeout=HTTP_TIMEOUT_S)
        reply.raise_for_status()
        edges = TypeAdapter(list[EdgeInfo]).validate_json(reply.content)
        url = next(e.url for e in edges if to_checksum_address(e.address) == previous).rstrip("/") + "/handover"
        body = HandoverRequest(association=req, edge=node.address).model_dump_json().encode()
        headers = signed_headers(node.chain.account, node.chain_id, "POST", httpx.URL(url).path, body)
        headers["Content-Type"] = "application/json"
        answer = httpx.post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    except (httpx.HTTPError, ValueError, StopIteration) as exc:
        log.warning("handover of %s from %s failed: %s", req.vehicle, previous, exc)
        return False, []
    if answer.status_code != 200:
        log.warning("edge %s refused the handover of %s: %s", previous, req.vehicle, answer.text)
        return False, []
    result = HandoverResult.model_validate_json(answer.content)
    return result.released, result.trainer_of


def handover(node: EdgeNode, req: HandoverRequest, signer: str) -> HandoverResult:
    """Drop a vehicle that signed an association with the edge ``signer`` (the new edge)."""
    new_edge = to_checksum_address(req.edge)
    if signer != new_edge:
        raise ProblemError(403, "not_edge", f"signed by {signer}, but the vehicle moves to {new_edge}")
    assoc = req.association
    vehicle = _check_vehicle_signature(node, assoc, new_edge)
    known = _check_newer(node, vehicle, assoc.timestamp_ms)
    index = known.vehicle_index if known else node.vehicle_index(vehicle)
    node.state.save_association(AssociationRow(vehicle, index, new_edge, assoc.x, assoc.y, assoc.timestamp_ms))
    released = known is not None and known.edge == node.address
    trainer_of = node.state.release_trainer(index, lambda task_id: node.task(task_id).spec.asynchrony.reach) if released else []
    node.metrics.associations.labels("handed_over").inc()
    return HandoverResult(vehicle=vehicle, released=released, trainer_of=trainer_of)

