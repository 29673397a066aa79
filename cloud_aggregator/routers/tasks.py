"""``/tasks``: publish a task, add its test set, follow its rounds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.codec import blob_digest
from bmfl.protocol.schemas import MAX_TASK_ID, EdgeTask, TaskDraft, TaskSpec
from bmfl.models import MODELS
from bmfl.rounds import initial_model_blob
from bmfl.rounds.validate import Problem, validate_task
from chain.tasks import task_params
from service_kit.openapi_docs import BOUNDED, SIGNED, UNAVAILABLE, problem_responses
from service_kit.problems import ProblemError
from cloud_aggregator.auth import SignedRoute, check_publisher
from cloud_aggregator.context import Cloud, get_cloud
from cloud_aggregator.edges import EdgeCallError
from cloud_aggregator.publishing import check_on_chain, check_task
from cloud_aggregator.audit_view import AuditView
from cloud_aggregator.views import TaskView

router = APIRouter()
dry_run = APIRouter(prefix="/tasks", tags=["tasks"])  # unsigned, bounded, no chain
public = APIRouter(prefix="/tasks", tags=["tasks"])
models = APIRouter(prefix="/models", tags=["models"])
publisher = APIRouter(prefix="/tasks", tags=["tasks"], route_class=SignedRoute)  # signed by the task's publisher
CloudDep = Annotated[Cloud, Depends(get_cloud)]
TaskPath = Annotated[int, Path(ge=1, le=MAX_TASK_ID, description="task id on chain")]
TASK_CHECKS = ["invalid_spec", "unknown_model", "initial_model_<codec reason>", "invalid_test_set", "escrow_too_small"]
PUBLISH_PROBLEMS = problem_responses(
    SIGNED, BOUNDED, UNAVAILABLE,
    {403: ["not_publisher"], 404: ["unknown_task"], 409: ["duplicate_task", "task_not_fresh", "chain_mismatch"],
     422: TASK_CHECKS, 502: ["edge_unavailable"]},
)  # fmt: skip
TEST_SET_PROBLEMS = problem_responses(
    SIGNED, BOUNDED, UNAVAILABLE,
    {403: ["not_publisher"], 404: ["unknown_task"], 409: ["test_set_present", "chain_mismatch"],
     422: ["invalid_test_set", "invalid_spec"], 502: ["edge_unavailable"]},
)  # fmt: skip
READ_PROBLEMS_RAW = {404: ["unknown_task"], 422: ["invalid_request"], 503: ["chain_unavailable"]}
READ_PROBLEMS = problem_responses(READ_PROBLEMS_RAW)


class TaskCheck(BaseModel):
    """A draft that passed the dry run, normalised (defaults filled in)."""

    draft: TaskDraft
    initial_model_cid: str | None = Field(description="CID of the initial model, to escrow with createTask")
    test_set_digest: str | None = Field(description="sha2-256 of the test set, to escrow with createTask")
    create_task: dict[str, Any] | None = Field(
        None,
        description="with both blobs: BMFLTasks.createTask's TaskParams in field order (digests 0x-hex) and the value to send, in wei",
    )


class TaskProblem(BaseModel):
    reason: str
    detail: str


class TaskProblems(BaseModel):
    reason: str = Field(description="invalid_task")
    detail: str
    problems: list[TaskProblem]


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, "too_large", f"{what} exceeds {limit} bytes")
    return data


def _forward(cloud: Cloud, spec: TaskSpec, test_set: bytes) -> None:
    """The test set goes to the edges only; the cloud keeps nothing but its digest."""
    task = EdgeTask(spec=spec, test_set_digest=blob_digest(test_set).hex0x)
    try:
        for edge in cloud.ctx.edges:
            edge.put_task(task, test_set)
    except EdgeCallError as exc:
        raise ProblemError(502, "edge_unavailable", str(exc)) from None


@publisher.post("", status_code=201, response_model=TaskView, responses=PUBLISH_PROBLEMS)
async def publish(
    cloud: CloudDep,
    request: Request,
    spec: Annotated[str, Form(description="TaskSpec JSON, with the task_id createTask returned")],
    initial_model: Annotated[UploadFile, File(description="initial model, safetensors")],
    test_set: Annotated[UploadFile | None, File(description="private test set (bmfl.protocol.testset)")] = None,
) -> TaskView:
    """Publish a task escrowed on chain: checked against ``TaskCreated``, test set to the edges."""
    try:
        parsed = TaskSpec.model_validate_json(spec)
    except ValidationError as exc:
        raise ProblemError(422, "invalid_spec", str(exc)) from None
    check_publisher(cloud, parsed.task_id, request.state.signer)
    if cloud.ctx.state.task(parsed.task_id) is not None:
        raise ProblemError(409, "duplicate_task", f"task {parsed.task_id} is already published")
    limit = cloud.settings.max_blob_bytes
    model_blob = await _read(initial_model, limit, "initial_model")
    test_blob = await _read(test_set, limit, "test_set") if test_set is not None else None
    check_task(parsed, test_blob, model_blob, limit)
    initial_cid = str(compute_cid(model_blob))
    if test_blob is not None:
        digest = blob_digest(test_blob).hex0x
    else:
        digest = cloud.chain_test_set_digest(parsed.task_id)
    check_on_chain(cloud.ctx.chain, parsed, model_blob, initial_cid, digest)
    if test_blob is not None:
        _forward(cloud, parsed, test_blob)
    cloud.ctx.store.put(model_blob, pin=True)
    cloud.ctx.state.add_task(parsed, "ready" if test_blob is not None else "awaiting_test_set", initial_cid, digest)
    cloud.metrics_published.inc()
    if test_blob is not None:
        cloud.orchestrator.start(parsed.task_id)
    return cloud.view(parsed.task_id)


@dry_run.post(
    "/validate", response_model=TaskCheck,
    responses={
        **problem_responses(BOUNDED),
        422: {"model": TaskProblems, "description": "reason `invalid_task`, every problem listed with its reason: "
              + ", ".join(f"`{r}`" for r in TASK_CHECKS) + " (or `unknown_part` / `repeated_part` for a malformed form)"},
    },
)  # fmt: skip
async def validate(
    cloud: CloudDep,
    spec: Annotated[str, Form(description="TaskDraft JSON (a TaskSpec's task_id is accepted and ignored)")],
    initial_model: Annotated[UploadFile | None, File(description="initial model, safetensors")] = None,
    test_set: Annotated[UploadFile | None, File(description="private test set (bmfl.protocol.testset)")] = None,
) -> Any:
    """Dry run of ``POST /tasks`` before escrowing: the spec, model and test set checked as
    the publication would be, without the chain. 200 with the normalised draft, or 422
    ``invalid_task`` with every problem."""
    limit = cloud.settings.max_blob_bytes
    draft = _draft(spec)
    if isinstance(draft, Problem):
        problems = [draft]
    else:
        model_blob = await _read(initial_model, limit, "initial_model") if initial_model is not None else None
        test_blob = await _read(test_set, limit, "test_set") if test_set is not None else None
        problems = validate_task(draft, test_blob, model_blob, limit)
        if not problems:
            cid = str(compute_cid(model_blob)) if model_blob is not None else None
            digest = blob_digest(test_blob) if test_blob is not None else None
            params = None
            if model_blob is not None and digest is not None:
                params = _create_task(draft, blob_digest(model_blob).raw, cid, digest.raw)  # type: ignore[arg-type]
            return TaskCheck(draft=draft, initial_model_cid=cid, test_set_digest=digest.hex0x if digest else None, create_task=params)
    listed = [{"reason": p.reason, "detail": p.detail} for p in problems]
    detail = "; ".join(f"{p.reason}: {p.detail}" for p in problems)
    return JSONResponse({"reason": "invalid_task", "detail": detail, "problems": listed}, status_code=422)


def _create_task(draft: TaskDraft, model_digest: bytes, cid: str, test_digest: bytes) -> dict[str, Any]:
    """``createTask``'s arguments as the chain's client sends them (``chain.tasks.task_params``)."""
    params = task_params(draft, model_digest, cid, test_digest)
    names = ["blockReward", "category", "maxRounds", "targetAccuracy", "roundDuration", "challengePeriod",
             "initialModelDigest", "initialModelCid", "testSetDigest", "tauMax"]  # fmt: skip
    values = ["0x" + v.hex() if isinstance(v, bytes) else v for v in params.as_tuple()]
    return {"params": dict(zip(names, values, strict=True)), "value_wei": draft.reward_wei}


@models.get(
    "/{name}/initial",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the blob (safetensors)"},
               **problem_responses({404: ["unknown_model"], 422: ["invalid_request"]})},
)  # fmt: skip
def initial_model(
    name: Annotated[str, Path(max_length=64, description="model registry name, as in the spec's model")],
    seed: Annotated[int, Query(ge=0, lt=2**63, description="the spec's seed")] = 0,
) -> Response:
    """w⁰, the seeded initialisation of ``name`` (``bmfl.rounds.initial_model_blob``), as the
    ``initial_model`` part of a publication, for publishers without our Python. Its CID and
    digest come back from ``POST /tasks/validate``."""
    if name not in MODELS.names():
        raise ProblemError(404, "unknown_model", f"model {name!r} is not one of {MODELS.names()}")
    return Response(initial_model_blob(name, seed, "publisher"), media_type="application/octet-stream")


def _draft(spec: str) -> TaskDraft | Problem:
    """A TaskDraft from its JSON, or from a TaskSpec's (its task_id dropped)."""
    try:
        return TaskDraft.model_validate_json(spec)
    except ValidationError as exc:
        try:
            return TaskDraft(**TaskSpec.model_validate_json(spec).model_dump(exclude={"task_id"}))
        except ValidationError:
            return Problem("invalid_spec", str(exc))


@publisher.put("/{task_id}/test-set", response_model=TaskView, responses=TEST_SET_PROBLEMS)
async def add_test_set(
    cloud: CloudDep, request: Request, task_id: TaskPath, test_set: Annotated[UploadFile, File()]
) -> TaskView:
    """The test set of a task published without one; its digest must match the chain."""
    task = cloud.task(task_id)
    check_publisher(cloud, task_id, request.state.signer)
    if task["status"] != "awaiting_test_set":
        raise ProblemError(409, "test_set_present", f"task {task_id} already has its test set")
    blob = await _read(test_set, cloud.settings.max_blob_bytes, "test_set")
    check_task(task["spec"], blob, None, cloud.settings.max_blob_bytes)
    if blob_digest(blob).hex0x != task["test_set_digest"]:
        raise ProblemError(409, "chain_mismatch", "the test set's digest differs from the one on chain")
    _forward(cloud, task["spec"], blob)
    cloud.ctx.state.set_status(task_id, "ready")
    cloud.orchestrator.start(task_id)
    return cloud.view(task_id)


@public.get("", response_model=list[TaskView], responses=problem_responses(UNAVAILABLE))
def list_tasks(cloud: CloudDep) -> list[TaskView]:
    return [cloud.view(t["task_id"]) for t in cloud.ctx.state.tasks()]


@public.get("/{task_id}", response_model=TaskView, responses=READ_PROBLEMS)
def get_task(cloud: CloudDep, task_id: TaskPath) -> TaskView:
    """Status, rounds (accuracy, leader, selected and received counts, times), the round in
    training, ETA, ε per vehicle, milestones, and the ledger: escrow, block rewards,
    payouts, refunds, each payee's credit claimed and outstanding, gas spent."""
    return cloud.view(task_id, full=True)


@public.get("/{task_id}/audit", response_model=AuditView, responses=READ_PROBLEMS)
def get_audit(cloud: CloudDep, task_id: TaskPath) -> AuditView:
    """The auditor's checks, run by this cloud at the current chain head: every payout,
    block reward, score and leader re-derived from the chain's events, and every recorded
    model blob fetched from this cloud's store and hashed. The rounds are not re-executed;
    for an independent verdict run ``bmfl audit`` (with ``--reexecute``) yourself."""
    return cloud.audit(task_id)


@public.get("/{task_id}/rounds/{round_}", responses=problem_responses(READ_PROBLEMS_RAW, {404: ["unknown_round"]}))
def get_round(cloud: CloudDep, task_id: TaskPath, round_: int) -> dict[str, Any]:
    """One finished round: global model, edges' records, trainers, leader, flagged."""
    cloud.task(task_id)
    for record in cloud.ctx.state.rounds(task_id):
        if record["round"] == round_:
            return record
    raise ProblemError(404, "unknown_round", f"task {task_id} has no finished round {round_}")



router.include_router(dry_run)
router.include_router(publisher)
router.include_router(public)
router.include_router(models)
