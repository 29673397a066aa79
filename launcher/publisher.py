"""The publisher's side of ``POST /tasks``: check the task with the core's
:func:`~bmfl.rounds.validate.check_task` and, when asked, with the cloud's dry run
``POST /tasks/validate`` (a typo costs no escrow), escrow the reward on chain from the
publisher's own key, then hand the cloud the task, the initial model and the test set."""

from __future__ import annotations

import httpx

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.codec import blob_digest
from bmfl.data.base import TensorData
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.protocol.signing import signed_headers
from bmfl.protocol.testset import encode_test_set
from bmfl.rounds import initial_model_blob
from bmfl.rounds.validate import Problem, TaskInvalid, check_task
from service_kit.chain_access import ChainAccess
from chain.tasks import task_params


class PublishFailed(RuntimeError):
    """The task was escrowed as ``task_id`` but the cloud did not take it (``bmfl task
    refund`` recovers the escrow once it stalls)."""

    def __init__(self, task_id: int, message: str) -> None:
        super().__init__(f"task {task_id} is escrowed but not published: {message}")
        self.task_id = task_id


def dry_run(cloud_url: str, draft: TaskDraft, model_blob: bytes, test_blob: bytes, timeout_s: float = 120.0) -> dict:
    """The cloud's ``POST /tasks/validate`` of exactly what will be published: its answer
    (normalised draft, CID, digest); :class:`~bmfl.rounds.validate.TaskInvalid` with every
    problem the cloud found."""
    files = {
        "spec": (None, draft.model_dump_json(), "application/json"),
        "initial_model": ("initial_model.safetensors", model_blob),
        "test_set": ("test_set.safetensors", test_blob),
    }
    reply = httpx.post(f"{cloud_url.rstrip('/')}/tasks/validate", files=files, timeout=timeout_s)
    if reply.status_code == 422 and "problems" in reply.json():
        raise TaskInvalid([Problem(p["reason"], p["detail"]) for p in reply.json()["problems"]])
    if reply.status_code != 200:
        raise RuntimeError(f"POST /tasks/validate: HTTP {reply.status_code} {reply.text[:500]}")
    return reply.json()


class Publisher:
    """Publishes tasks from ``chain``'s account to the cloud at ``cloud_url`` (requests
    signed with the publisher's key: ``cloud_aggregator.auth``)."""

    def __init__(self, chain: ChainAccess, cloud_url: str, timeout_s: float = 120.0) -> None:
        self.chain, self.cloud_url, self.timeout_s = chain, cloud_url.rstrip("/"), timeout_s

    def publish(
        self, draft: TaskDraft, test_set: TensorData | bytes, initial_model: bytes | None = None, ask_cloud: bool = False
    ) -> dict:
        """Check the task (:func:`bmfl.rounds.validate.check_task`, and with ``ask_cloud``
        the cloud's dry run, raising :class:`~bmfl.rounds.validate.TaskInvalid` before any
        transaction), ``createTask`` with the escrow, then ``POST /tasks``; returns the
        cloud's TaskView. A test set given as bytes is sent as is (its digest goes on chain)."""
        test_blob = test_set if isinstance(test_set, bytes) else encode_test_set(test_set)
        check_task(draft, test_blob, initial_model)  # a w⁰ built here from the checked model is valid by construction
        model_blob = initial_model or initial_model_blob(draft.model, draft.seed, self.chain.address)
        if ask_cloud:
            dry_run(self.cloud_url, draft, model_blob, test_blob, self.timeout_s)
        params = task_params(draft, blob_digest(model_blob).raw, str(compute_cid(model_blob)), blob_digest(test_blob).raw)
        with self.chain.lock:
            task_id, _ = self.chain.tasks.create_task(params, draft.reward_wei)
        spec = TaskSpec(task_id=task_id, **draft.model_dump())
        files = {
            "spec": (None, spec.model_dump_json(), "application/json"),
            "initial_model": ("initial_model.safetensors", model_blob),
            "test_set": ("test_set.safetensors", test_blob),
        }
        request = httpx.Request("POST", f"{self.cloud_url}/tasks", files=files)
        body = request.read()
        request.headers.update(signed_headers(self.chain.account, self.chain.chain_id, "POST", request.url.path, body))
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                reply = client.send(request)
        except httpx.HTTPError as exc:
            raise PublishFailed(task_id, f"POST /tasks: {exc}") from None
        if reply.status_code != 201:
            raise PublishFailed(task_id, f"POST /tasks: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json()
