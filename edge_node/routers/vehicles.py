"""Vehicle-facing: ``GET /tasks``, ``GET /tasks/{id}/assignment``, ``POST
/tasks/{id}/rounds/{r}/updates`` (a multipart form) and ``PUT
/tasks/{id}/rounds/{r}/updates/{vehicle}`` (the blob as the body, the rest in headers)."""

from __future__ import annotations

import io

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bmfl.blobs.errors import CodecReason
from bmfl.protocol.schemas import Assignment, UploadReceipt
from bmfl.protocol.signing import EPSILON_HEADER, UPDATE_SIGNATURE_HEADER
from service_kit.openapi_docs import BOUNDED, UNAVAILABLE, problem_responses
from service_kit.problems import ProblemError
from edge_node.node import EdgeNode
from edge_node.routers import RoundPath, TaskPath
from edge_node.uploads import Upload, accept_update

UPLOAD_PROBLEMS = {
    401: ["unsigned", "bad_signature"], 403: ["unregistered", "not_selected"], 404: ["unknown_task"],
    409: ["round_not_open", "stale", "deadline_passed", "duplicate"], 413: ["too_large"],
    422: ["invalid_request", "wrong_round", "blob_unavailable", *(r.value for r in CodecReason)],
}  # fmt: skip
RAW_UPLOAD_PROBLEMS = {**UPLOAD_PROBLEMS, 415: ["unsupported_media_type"]}
RAW_UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the update (safetensors)",
    },
    "parameters": [
        {"name": UPDATE_SIGNATURE_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
         "description": "EIP-191 signature of update_message (without it: 401 unsigned)"},
        {"name": EPSILON_HEADER, "in": "header", "required": False, "schema": {"type": "number", "minimum": 0},
         "description": "the vehicle's ε so far"},
    ],
}  # fmt: skip


def _epsilon(text: str | None) -> float | None:
    """The ε header: absent, or a number ≥ 0 (422 ``invalid_request`` otherwise)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        detail = f"{EPSILON_HEADER} must be a number ≥ 0, got {text[:32]!r}"  # pragma: no mutate
        raise ProblemError(422, "invalid_request", detail)
    return value


class ServedTask(BaseModel):
    """A task this edge serves and its current round here (0 before the first)."""

    task_id: int
    model: str
    category: int
    round: int
    open: bool = Field(description="uploads are accepted for this round")


def vehicles_router(node: EdgeNode) -> APIRouter:
    router = APIRouter(tags=["vehicles"])
    deadlines: dict[tuple[int, int], int] = {}  # (task, round) → deadline, read once while open

    @router.get("/tasks", response_model=list[ServedTask])
    def get_tasks() -> list[ServedTask]:
        """The tasks this edge serves, with their current round."""
        out = []
        for row in node.state.tasks():
            spec = node.task(row.task_id).spec
            current = node.state.latest_round(row.task_id)
            out.append(
                ServedTask(
                    task_id=row.task_id, model=spec.model, category=spec.category,
                    round=current.round if current else 0, open=current is not None and current.phase == "open",
                )  # fmt: skip
            )
        return out

    @router.get("/tasks/{task_id}/assignment", response_model=Assignment)
    def get_assignment(task_id: TaskPath, vehicle: str = Query(description="the vehicle's address")) -> Assignment:
        """Whether ``vehicle`` trains here in the current round (selected here, or handed
        over by the edge that selected it), and the global model to start from."""
        spec = node.task(task_id).spec
        index = node.vehicle_index(vehicle)
        current = node.state.latest_round(task_id)
        selected = current is not None and index in current.selected
        if current is not None and current.phase == "open":  # startRound's deadline holds until finalizeRound
            key = (task_id, current.round)
            deadline = deadlines[key] if key in deadlines else deadlines.setdefault(key, node.chain.tasks.task(task_id).deadline)
        else:
            deadline = node.chain.tasks.task(task_id).deadline if current is not None else None
        return Assignment(
            task_id=task_id, round=current.round if current else 0, selected=selected,
            open=current is not None and current.phase == "open",
            global_cid=current.global_cid if current else None, global_digest=current.global_digest if current else None,
            deadline=deadline, model=spec.model, training=spec.training, edge=node.address,
        )  # fmt: skip

    @router.post(
        "/tasks/{task_id}/rounds/{round}/updates", status_code=202, response_model=UploadReceipt,
        responses=problem_responses(BOUNDED, UNAVAILABLE, UPLOAD_PROBLEMS),
    )  # fmt: skip
    def post_update(
        task_id: TaskPath,
        round_: RoundPath,
        vehicle: str = Form(description="the vehicle's address"),
        signature: str | None = Form(None, description="EIP-191 signature of update_message"),
        epsilon: float | None = Form(None, ge=0, description="the vehicle's ε so far"),
        blob: UploadFile | None = File(None, description="the update (safetensors), or give cid"),
        cid: str | None = Form(None, description="CID of the update in the blob store, or give blob"),
    ) -> UploadReceipt:
        """A selected vehicle's signed update; checked in the order of docs/protocol.md."""
        return accept(task_id, round_, Upload(vehicle, signature, epsilon, blob.file if blob else None, cid))

    @router.put(
        "/tasks/{task_id}/rounds/{round}/updates/{vehicle}", status_code=202, response_model=UploadReceipt,
        responses=problem_responses(BOUNDED, UNAVAILABLE, RAW_UPLOAD_PROBLEMS), openapi_extra=RAW_UPLOAD_OPENAPI,
    )  # fmt: skip
    async def put_update(
        request: Request, task_id: TaskPath, round_: RoundPath, vehicle: str = Path(max_length=64, description="the vehicle's address")
    ) -> UploadReceipt:
        """The same upload as ``POST …/updates`` without the form: the blob is the body
        (``application/octet-stream``), the signature and ε are headers; the same checks
        in the same order, the same receipt. Cheaper for the edge to take (no multipart
        parsing; the headers are read here, not by FastAPI's parameter machinery)."""
        headers = request.headers
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/octet-stream":
            detail = "the body is the update's bytes, sent as application/octet-stream"  # pragma: no mutate
            raise ProblemError(415, "unsupported_media_type", detail)
        epsilon = _epsilon(headers.get(EPSILON_HEADER))
        upload = Upload(vehicle, headers.get(UPDATE_SIGNATURE_HEADER), epsilon, io.BytesIO(await request.body()), None)
        return await run_in_threadpool(accept, task_id, round_, upload)

    def accept(task_id: int, round_: int, upload: Upload) -> UploadReceipt:
        try:
            receipt, outcome = accept_update(node, task_id, round_, upload)
        except ProblemError as exc:
            node.metrics.uploads.labels(exc.reason).inc()
            raise
        node.metrics.uploads.labels(outcome).inc()
        return receipt

    return router
