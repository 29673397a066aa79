"""The publisher's side of ``POST /tasks``: check the task with the core's
:func:`~bmfl.rounds.validate.check_task` (a typo costs no escrow), escrow the reward on
chain from the publisher's own key, then hand the cloud the task, the initial model and
the test set."""

from __future__ import annotations

import httpx

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.codec import BlobMeta, blob_digest, encode_state
from bmfl.data.base import TensorData
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.protocol.signing import signed_headers
from bmfl.protocol.testset import encode_test_set
from bmfl.rounds import initial_model
from bmfl.rounds.validate import check_task
from service_kit.chain_access import ChainAccess
from chain.tasks import task_params


def initial_model_blob(model: str, seed: int, publisher: str) -> bytes:
    """w⁰ (``bmfl.rounds.initial_model``: the seeded initialisation) as a blob."""
    return encode_state(initial_model(model, seed).state_dict(), BlobMeta("initial", 0, publisher, model))


class Publisher:
    """Publishes tasks from ``chain``'s account to the cloud at ``cloud_url`` (requests
    signed with the publisher's key: ``cloud_aggregator.auth``)."""

    def __init__(self, chain: ChainAccess, cloud_url: str, timeout_s: float = 120.0) -> None:
        self.chain, self.cloud_url, self.timeout_s = chain, cloud_url.rstrip("/"), timeout_s

    def publish(self, draft: TaskDraft, test_set: TensorData, initial_model: bytes | None = None) -> dict:
        """Check the task (:func:`bmfl.rounds.validate.check_task`, raising
        :class:`~bmfl.rounds.validate.TaskInvalid` before any transaction), ``createTask``
        with the escrow, then ``POST /tasks``; returns the cloud's TaskView."""
        test_blob = encode_test_set(test_set)
        check_task(draft, test_blob, initial_model)  # a w⁰ built here from the checked model is valid by construction
        model_blob = initial_model or initial_model_blob(draft.model, draft.seed, self.chain.address)
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
        with httpx.Client(timeout=self.timeout_s) as client:
            reply = client.send(request)
        if reply.status_code != 201:
            raise RuntimeError(f"POST /tasks: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json()
