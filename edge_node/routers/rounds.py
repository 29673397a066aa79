"""Cloud-facing task and round steps (signed by the registry's cloud) and the public
round progress."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, File, Form, UploadFile

from bmfl.blobs.local import atomic_write
from bmfl.protocol.schemas import (
    EdgeTask,
    EvaluateRequest,
    EvaluateResult,
    RoundClose,
    RoundOpen,
    RoundProgress,
    RoundSelection,
    ScoreRequest,
    ScoreResult,
)
from bmfl.protocol.testset import TestSetError, decode_test_set
from service_kit.openapi_docs import BOUNDED, UNAVAILABLE, problem_responses
from service_kit.problems import ProblemError
from chain.tasks import Status
from edge_node.auth import cloud_only, signed_route
from edge_node.node import EdgeNode
from edge_node.rounds import RoundEngine
from edge_node.routers import RoundPath, TaskPath
from edge_node.state import TaskRow


# Each cloud-facing step's problem bodies (409 chain_refused: the chain reverted the
# step's transaction, edge_node/app.py).
SERVED = {404: ["unknown_task"], 422: ["blob_unavailable"], 503: UNAVAILABLE[503]}
PUT_TASK = problem_responses(BOUNDED, UNAVAILABLE, {
    404: ["unknown_task"], 409: ["task_exists"], 422: ["invalid_request", "digest_mismatch", "bad_test_set"],
})  # fmt: skip
OPEN = problem_responses(SERVED, {409: ["wrong_phase", "global_mismatch", "chain_refused"]})
CLOSE = problem_responses(SERVED, {404: ["unknown_round"], 409: ["wrong_phase", "chain_refused"]})
SCORES = problem_responses(SERVED, {
    404: ["unknown_round"], 409: ["not_recorded", "wrong_phase", "chain_refused"], 422: ["preliminary_mismatch"],
})  # fmt: skip
EVALUATE = problem_responses(SERVED)


def rounds_router(node: EdgeNode, engine: RoundEngine) -> APIRouter:
    router = APIRouter(tags=["rounds"])
    cloud = APIRouter(tags=["rounds"], route_class=signed_route(node, cloud_only(node)))

    @cloud.put("/tasks/{task_id}", response_model=EdgeTask, responses=PUT_TASK)
    def put_task(
        task_id: TaskPath,
        task: str = Form(description="EdgeTask JSON"),
        test_set: UploadFile = File(description="the publisher's private test set (bmfl.protocol.testset)"),
    ) -> EdgeTask:
        """Serve a task; the test set must match the on-chain test-set digest."""
        return _save_task(node, task_id, task, test_set.file.read(node.settings.max_test_set_bytes + 1))

    @cloud.post("/tasks/{task_id}/rounds/{round}/open", response_model=RoundSelection, responses=OPEN)
    def post_open(task_id: TaskPath, req: RoundOpen, round_: RoundPath) -> RoundSelection:
        """Select ⌈V·n⌉ matching associated vehicles and commit them on chain."""
        return engine.open(task_id, round_, req)

    @router.get("/tasks/{task_id}/rounds/{round}", response_model=RoundProgress,
                responses=problem_responses({404: ["unknown_round"]}))  # fmt: skip
    def get_progress(task_id: TaskPath, round_: RoundPath) -> RoundProgress:
        """Selected trainers and the updates received so far."""
        return engine.progress(task_id, round_)

    @cloud.post("/tasks/{task_id}/rounds/{round}/close", response_model=RoundClose, responses=CLOSE)
    def post_close(task_id: TaskPath, round_: RoundPath) -> RoundClose:
        """Filter and aggregate the accepted updates; preliminary model; ``recordRound``."""
        return engine.close(task_id, round_)

    @cloud.post("/tasks/{task_id}/rounds/{round}/scores", response_model=ScoreResult, responses=SCORES)
    def post_scores(task_id: TaskPath, req: ScoreRequest, round_: RoundPath) -> ScoreResult:
        """Test-set scores of every edge's preliminary model; ``submitScores``."""
        return engine.scores(task_id, round_, req)

    @cloud.post("/tasks/{task_id}/evaluate", response_model=EvaluateResult, responses=EVALUATE)
    def post_evaluate(task_id: TaskPath, req: EvaluateRequest) -> EvaluateResult:
        """A model's accuracy on the task's test set."""
        return engine.evaluate(task_id, req)

    router.include_router(cloud)
    return router


def _save_task(node: EdgeNode, task_id: int, task_json: str, test_set: bytes) -> EdgeTask:
    """Check the task against the chain and store it with its test set (idempotent)."""
    try:
        task = EdgeTask.model_validate_json(task_json)
    except ValueError as exc:
        raise ProblemError(422, "invalid_request", f"task: {exc}") from None
    if task.spec.task_id != task_id:
        raise ProblemError(422, "invalid_request", f"the spec is for task {task.spec.task_id}, not {task_id}")
    info = node.chain.tasks.task(task_id)
    if info.status == Status.NONE:
        raise ProblemError(404, "unknown_task", f"no task {task_id} on chain")
    on_chain = "0x" + info.test_set_digest.hex()
    digest = "0x" + hashlib.sha256(test_set).hexdigest()
    if task.test_set_digest.lower() != on_chain or digest != on_chain:
        detail = f"the chain's test-set digest is {on_chain}; task names {task.test_set_digest}, file hashes to {digest}"
        raise ProblemError(422, "digest_mismatch", detail)
    try:
        decode_test_set(test_set)
    except TestSetError as exc:
        raise ProblemError(422, "bad_test_set", str(exc)) from None
    known = node.state.task(task_id)
    if known is not None:
        if EdgeTask.model_validate_json(known.task) != task:
            raise ProblemError(409, "task_exists", f"task {task_id} is already served with another spec")
        return task
    path = node.settings.state_dir / "test_sets" / f"{task_id}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, test_set)
    node.state.save_task(TaskRow(task_id, task.model_dump_json(), str(path)))
    return task
