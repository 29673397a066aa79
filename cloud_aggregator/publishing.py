"""Checks of a publication: the task itself (one core check, :func:`bmfl.rounds.validate.validate_task`,
the same the publisher's client runs before escrowing) and against the chain: what the
publisher escrowed with ``createTask`` must be exactly the task it asks the cloud to run."""

from __future__ import annotations

from bmfl.blobs.codec import blob_digest
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.rounds.validate import validate_task
from service_kit.chain_access import ChainAccess
from service_kit.problems import ProblemError
from chain.tasks import Status, TaskParams, task_params


def check_task(spec: TaskDraft, test_set: bytes | None, initial_model: bytes | None, max_test_set_bytes: int) -> None:
    """:func:`bmfl.rounds.validate.validate_task` (the check the publisher's client runs
    before ``createTask``); 422 with the first problem's reason (every problem in the
    detail)."""
    problems = validate_task(spec, test_set, initial_model, max_test_set_bytes)
    if problems:
        detail = "; ".join(p.detail if len(problems) == 1 else f"{p.reason}: {p.detail}" for p in problems)
        raise ProblemError(422, problems[0].reason, detail)


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
