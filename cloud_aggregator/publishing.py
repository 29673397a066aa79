"""Checks of a publication against the chain: what the publisher escrowed with
``createTask`` must be exactly the task it asks the cloud to run."""

from __future__ import annotations

from bmfl.blobs.codec import blob_digest, decode_state
from bmfl.blobs.errors import BlobCodecError
from bmfl.models import MODELS
from bmfl.protocol.schemas import TaskSpec
from bmfl.rounds import cloud_rule, edge_rule
from bmfl.protocol.testset import TestSetError, decode_test_set
from service_kit.chain_access import ChainAccess
from service_kit.problems import ProblemError
from chain.tasks import Status, TaskParams, task_params


def check_model(spec: TaskSpec, initial_model: bytes) -> None:
    """The model exists and the initial model blob is a valid state of it."""
    if spec.model not in MODELS.names():
        raise ProblemError(422, "unknown_model", f"model {spec.model!r} is not one of {MODELS.names()}")
    try:
        decode_state(initial_model, spec.model)
    except BlobCodecError as exc:
        raise ProblemError(422, f"initial_model_{exc.reason.value}", str(exc)) from None


def check_aggregation(spec: TaskSpec) -> None:
    """The edges' filters and rule and the cloud's rule can be built from the spec (else the
    task would fail at its first close, with the escrow locked until the deadline)."""
    try:
        edge_rule(spec.aggregation, lambda vectors: vectors.new_zeros(len(vectors)))
        cloud_rule(spec.aggregation)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProblemError(422, "invalid_spec", f"aggregation: {exc}") from None


def check_test_set(test_set: bytes, max_bytes: int) -> None:
    try:
        decode_test_set(test_set, max_bytes)
    except TestSetError as exc:
        raise ProblemError(422, "invalid_test_set", str(exc)) from None


def check_on_chain(chain: ChainAccess, spec: TaskSpec, initial_model: bytes, initial_cid: str, test_set_digest: str) -> None:
    """Compare ``spec`` and the blobs with the ``TaskCreated`` event and the task's state."""
    events = chain.tasks.events("TaskCreated", chain.deployment.block_number, taskId=spec.task_id)
    if not events:
        raise ProblemError(404, "unknown_task", f"no task {spec.task_id} on chain")
    created, info = events[0], chain.tasks.task(spec.task_id)
    if info.status != Status.ACTIVE or info.round != 0:
        raise ProblemError(409, "task_not_fresh", f"task {spec.task_id} is {info.status.name.lower()} at round {info.round}")
    try:
        test_digest = bytes.fromhex(test_set_digest.removeprefix("0x"))
        expected = task_params(spec, blob_digest(initial_model).raw, initial_cid, test_digest).model_dump()
    except ValueError as exc:  # a spec no createTask could have escrowed
        raise ProblemError(409, "chain_mismatch", f"the spec does not fit createTask: {exc}") from None
    expected["escrow"] = spec.reward_wei
    logged = TaskParams.from_created(created).model_dump() | {"escrow": created.escrow}  # type: ignore[attr-defined]
    wrong = [f"{k}: chain {_show(logged[k])}, request {_show(v)}" for k, v in expected.items() if logged[k] != v]
    if wrong:
        raise ProblemError(409, "chain_mismatch", "; ".join(wrong))


def _show(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else repr(value)
