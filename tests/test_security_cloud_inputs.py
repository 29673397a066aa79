"""The malformed-input catalogue at a real cloud (uvicorn on loopback, its edge a real
edge server, real Anvil): ``POST /tasks`` and ``PUT /tasks/{id}/test-set`` with bad
signatures (including another account front-running the publisher), specs, models, test
sets, sizes and content types each get their 4xx and reason, and neither the cloud's
SQLite state, the edge's state nor the blob store changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bmfl.data import TensorData
from bmfl.protocol.schemas import TaskSpec
from bmfl.protocol.signing import signed_headers
from bmfl.protocol.testset import encode_test_set
from service_kit.serve import ServerThread
from chain.anvil import dev_key
from cloud_aggregator.app import create_app
from cloud_aggregator.settings import CloudSettings
from security_fixtures import assert_refused, cloud_state, edge_state, variant
from service_fixtures import CLOUD, OPERATOR, PUBLISHER, EdgeStack, ServiceChain, create_task, start_edge_stack
from service_fixtures import service_chain  # noqa: F401

MAX_BLOB = 1_000_000  # the test set is 627 kB, the model 88 kB
HUGE = 2**70


@dataclass
class Cloud:
    stack: EdgeStack
    server: ServerThread
    state_dir: Path
    spec: TaskSpec  # created on chain by the publisher, not yet published

    @property
    def chain(self) -> ServiceChain:
        return self.stack.chain

    def send(
        self, method: str, path: str, signer: LocalAccount | None, chain_id: int | None = None,
        replace: dict[str, str] | None = None, **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        """A request signed by ``signer`` (none: unsigned) for ``chain_id`` (default: this
        chain), then with the headers ``replace``."""
        request = httpx.Request(method, self.server.url + path, **kwargs)
        body = request.read()
        if signer is not None:
            request.headers.update(signed_headers(signer, chain_id or self.chain.chain_id, method, request.url.path, body))
        request.headers.update(replace or {})
        with httpx.Client(timeout=60) as client:
            return client.send(request)

    def publish(
        self, spec: str | dict | TaskSpec | None = None, model: bytes | None = None, test_set: bytes | None = b"default",
        signer: LocalAccount | None = None, **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        """``POST /tasks`` with the given parts (defaults: the honest ones, signed by the publisher)."""
        spec = self.spec if spec is None else spec
        text = spec if isinstance(spec, str) else json.dumps(spec) if isinstance(spec, dict) else spec.model_dump_json()
        files: dict[str, Any] = {"spec": (None, text), "initial_model": ("m", model or self.stack.data.initial_model)}
        if test_set is not None:
            files["test_set"] = ("t", self.stack.data.test_set if test_set == b"default" else test_set)
        return self.send("POST", "/tasks", signer or Account.from_key(dev_key(PUBLISHER)), files=files, **kwargs)

    def state(self) -> tuple:
        edge = self.stack.settings[0].state_dir
        return cloud_state(self.state_dir), edge_state(edge, edge.parent / "blobs")


@pytest.fixture(scope="module")
def cloud(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    directory = tmp_path_factory.mktemp("cloud")
    stack = start_edge_stack(service_chain, directory, edges=1)
    settings = CloudSettings(
        rpc_url=service_chain.rpc_url, deployment=service_chain.deployment_file, private_key=dev_key(CLOUD),
        blob_store=str(directory / "blobs"), state_dir=directory / "cloud", edges=[{"url": stack.url(0)}],
        max_blob_bytes=MAX_BLOB,
    )  # fmt: skip
    server = ServerThread(create_app(settings)).start()
    try:
        yield Cloud(stack, server, settings.state_dir, create_task(service_chain, stack.data, category=2))
    finally:
        server.stop()
        stack.stop()


def spec_with(spec: TaskSpec, **changes: Any) -> dict:
    """The spec as JSON data with top-level ``changes`` (nested dicts are merged)."""
    data = spec.model_dump(mode="json")
    for key, value in changes.items():
        data[key] = data[key] | value if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return data


def make_test_set(x: torch.Tensor, y: torch.Tensor, classes: int | None = 10) -> bytes:
    return encode_test_set(TensorData(x, y, classes))


def test_publication_refusals_change_nothing(cloud: Cloud) -> None:
    spec, data = cloud.spec, cloud.stack.data
    operator = Account.from_key(dev_key(OPERATOR))
    started = create_task(cloud.chain, data, category=2)
    cloud.chain.access(dev_key(CLOUD)).tasks.start_round(started.task_id, b"\1" * 32, "bafy-started")
    other_rows = make_test_set(torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.int64))
    no_filters = spec_with(spec, aggregation={"filters": [], "edge": {"name": "fedavg", "options": {}}, "standing": None})
    cases: list[tuple[str, Any, int, str]] = [
        ("unsigned", lambda: cloud.send("POST", "/tasks", None, files={"spec": (None, spec.model_dump_json())}), 401, "unsigned"),
        ("signature of 64 bytes", lambda: cloud.publish(replace={"X-BMFL-Signature": "0x" + "ab" * 64}), 401, "bad_signature"),
        ("signed for another chain", lambda: cloud.publish(chain_id=cloud.chain.chain_id + 1), 403, "not_publisher"),
        ("front-run by another account, without filters", lambda: cloud.publish(no_filters, signer=operator, test_set=None), 403, "not_publisher"),
        ("spec not JSON", lambda: cloud.publish("{"), 422, "invalid_spec"),
        ("spec 1,000 levels deep", lambda: cloud.publish("[" * 1000 + "]" * 1000), 422, "invalid_spec"),
        ("spec with an unknown field", lambda: cloud.publish(spec_with(spec, owner="me")), 422, "invalid_spec"),
        ("task id 2^70", lambda: cloud.publish(spec_with(spec, task_id=HUGE)), 422, "invalid_spec"),
        ("task unknown on chain", lambda: cloud.publish(spec_with(spec, task_id=9999)), 404, "unknown_task"),
        ("unknown model", lambda: cloud.publish(spec_with(spec, model="gpt")), 422, "unknown_model"),
        ("initial model truncated", lambda: cloud.publish(model=data.initial_model[:-10]), 422, "initial_model_truncated"),
        ("initial model with Inf", lambda: cloud.publish(model=variant(data.initial_model, "bmfl_cnn", "inf")), 422, "initial_model_non_finite"),
        ("initial model of another model", lambda: cloud.publish(spec_with(spec, model="mlp")), 422, "initial_model_model"),
        ("initial model over the limit", lambda: cloud.publish(model=bytes(MAX_BLOB + 1)), 413, "too_large"),
        ("unknown edge rule", lambda: cloud.publish(spec_with(spec, aggregation={"edge": {"name": "nope", "options": {}}})), 422, "invalid_spec"),
        ("bad edge rule option", lambda: cloud.publish(spec_with(spec, aggregation={"edge": {"name": "reweight", "options": {"bogus": 1}}})), 422, "invalid_spec"),
        ("DP with fixed-size batches", lambda: cloud.publish(spec_with(spec, training={"dp": True, "sampling": "fixed"})), 422, "invalid_spec"),
        ("dp_fedavg without noise", lambda: cloud.publish(spec_with(spec, aggregation={"edge": {"name": "dp_fedavg", "options": {"noise_multiplier": 0}}})), 422, "invalid_spec"),
        ("unknown filter", lambda: cloud.publish(spec_with(spec, aggregation={"filters": [{"name": "nope", "options": {}}]})), 422, "invalid_spec"),
        ("test set not safetensors", lambda: cloud.publish(test_set=b"\0" * 64), 422, "invalid_test_set"),
        ("test set with NaN", lambda: cloud.publish(test_set=make_test_set(torch.full((5, 1, 28, 28), float("nan")), torch.zeros(5, dtype=torch.int64))), 422, "invalid_test_set"),
        ("labels out of range", lambda: cloud.publish(test_set=make_test_set(torch.zeros(5, 1, 28, 28), torch.full((5,), 10))), 422, "invalid_test_set"),
        ("test set not the escrowed one", lambda: cloud.publish(test_set=other_rows), 409, "chain_mismatch"),
        ("escrow differs from the chain", lambda: cloud.publish(spec_with(spec, reward_wei=10**17)), 409, "chain_mismatch"),
        ("rounds differ from the chain", lambda: cloud.publish(spec_with(spec, rounds=9)), 409, "chain_mismatch"),
        ("task already running on chain", lambda: cloud.publish(started), 409, "task_not_fresh"),
        ("no initial model", lambda: cloud.send("POST", "/tasks", Account.from_key(dev_key(PUBLISHER)), files={"spec": (None, spec.model_dump_json())}), 422, "invalid_request"),
        ("JSON body", lambda: cloud.send("POST", "/tasks", Account.from_key(dev_key(PUBLISHER)), json=spec.model_dump(mode="json")), 422, "invalid_request"),
        ("2 MB spec field", lambda: cloud.publish(spec.model_dump_json()[:-1] + ', "x": "' + "a" * 2_000_000 + '"}'), 413, "too_large"),
        ("task of id 2^70", lambda: httpx.get(f"{cloud.server.url}/tasks/{HUGE}"), 422, "invalid_request"),
        ("task never published", lambda: httpx.get(f"{cloud.server.url}/tasks/{spec.task_id}"), 404, "unknown_task"),
        ("blob path not a CID", lambda: httpx.get(f"{cloud.server.url}/ipfs/zz"), 400, "invalid_request"),
    ]  # fmt: skip
    assert_refused(cases, cloud.state)
    assert httpx.get(f"{cloud.server.url}/tasks").json() == []


def test_test_set_refusals_change_nothing(cloud: Cloud) -> None:
    published = cloud.publish(test_set=None)
    assert (published.status_code, published.json()["status"]) == (201, "awaiting_test_set"), published.text
    task_id = cloud.spec.task_id
    path = f"/tasks/{task_id}/test-set"
    publisher, operator = Account.from_key(dev_key(PUBLISHER)), Account.from_key(dev_key(OPERATOR))
    good = {"test_set": ("t", cloud.stack.data.test_set)}
    other_rows = {"test_set": ("t", make_test_set(torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.int64)))}
    cases: list[tuple[str, Any, int, str]] = [
        ("published twice", lambda: cloud.publish(), 409, "duplicate_task"),
        ("unsigned", lambda: cloud.send("PUT", path, None, files=good), 401, "unsigned"),
        ("by another account", lambda: cloud.send("PUT", path, operator, files=good), 403, "not_publisher"),
        ("not a test set", lambda: cloud.send("PUT", path, publisher, files={"test_set": ("t", b"nonsense")}), 422, "invalid_test_set"),
        ("not the escrowed test set", lambda: cloud.send("PUT", path, publisher, files=other_rows), 409, "chain_mismatch"),
        ("task id 2^70", lambda: cloud.send("PUT", f"/tasks/{HUGE}/test-set", publisher, files=good), 422, "invalid_request"),
        ("task never published", lambda: cloud.send("PUT", "/tasks/9999/test-set", publisher, files=good), 404, "unknown_task"),
    ]  # fmt: skip
    assert_refused(cases, cloud.state)
    assert [t["status"] for t in httpx.get(f"{cloud.server.url}/tasks").json()] == ["awaiting_test_set"]
