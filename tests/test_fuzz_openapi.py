"""Schemathesis against the OpenAPI of a real edge and a real cloud (uvicorn on loopback,
real Anvil): every operation, positive and negative generation, requests to signed
routes signed by the right account (so fuzzing reaches past the signature check), path
parameters steered to the task and round that exist. Zero 5xx, and a 4xx never changes
the service's state (SQLite and blob store).

CI runs ``BMFL_FUZZ_EXAMPLES`` (default 10) examples per operation and mode; the longer
run documented in docs/security.md sets it to 300."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st

from bmfl.protocol.signing import signed_headers
from service_kit.serve import ServerThread
from chain.anvil import dev_key
from cloud_aggregator.app import create_app
from cloud_aggregator.settings import CloudSettings
from security_fixtures import cloud_state, edge_state
from service_fixtures import CLOUD, PUBLISHER, EdgeStack, ServiceChain, create_task, start_edge_stack
from service_fixtures import service_chain  # noqa: F401

EXAMPLES = int(os.environ.get("BMFL_FUZZ_EXAMPLES", "10"))
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@dataclass
class Target:
    """A service to fuzz: its URL, who signs which routes, the ids worth steering to,
    and what its state is."""

    url: str
    chain_id: int
    signer: Callable[[str, str], LocalAccount | None]  # (method, path template) → account
    task_id: int
    vehicle: str
    state: Callable[[], tuple]
    statuses: Counter = field(default_factory=Counter)


@dataclass
class Services:
    edge: Target
    cloud: Target


@pytest.fixture(scope="module")
def services(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    directory = tmp_path_factory.mktemp("fuzz")
    stack = start_edge_stack(service_chain, directory, edges=1)
    cloud_dir = directory / "cloud"
    settings = CloudSettings(
        rpc_url=service_chain.rpc_url, deployment=service_chain.deployment_file, private_key=dev_key(CLOUD),
        blob_store=str(directory / "blobs"), state_dir=cloud_dir, edges=[{"url": stack.url(0)}],
    )  # fmt: skip
    cloud = ServerThread(create_app(settings)).start()
    try:
        yield Services(edge_target(stack, directory / "blobs"), cloud_target(stack, cloud, cloud_dir, directory / "blobs"))
    finally:
        cloud.stop()
        stack.stop()


def edge_target(stack: EdgeStack, blobs: Path) -> Target:
    """Edge 0 serving a task with round 1 open and one selected vehicle."""
    spec = create_task(stack.chain, stack.data, category=1)
    stack.serve_task(spec)
    vehicle = stack.vehicles_at(0, 1, 1, first_row=0)[0]
    stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
    stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
    cloud, edge = stack.chain.cloud, Account.from_key(stack.chain.edge_keys[0])

    def signer(method: str, path: str) -> LocalAccount | None:
        if path == "/handover":
            return edge
        internal = (method == "put" and path == "/tasks/{task_id}") or path.endswith(("/open", "/close", "/scores", "/evaluate"))
        return cloud if internal else None

    return Target(
        stack.url(0), stack.chain.chain_id, signer, spec.task_id, vehicle.address,
        lambda: edge_state(stack.settings[0].state_dir, blobs),
    )  # fmt: skip


def cloud_target(stack: EdgeStack, cloud: ServerThread, state_dir: Path, blobs: Path) -> Target:
    """The cloud with one task published without its test set (so no round runs)."""
    spec = create_task(stack.chain, stack.data, category=2)
    publisher = Account.from_key(dev_key(PUBLISHER))
    files = {"spec": (None, spec.model_dump_json()), "initial_model": ("m", stack.data.initial_model)}
    request = requests.Request("POST", cloud.url + "/tasks", files=files).prepare()
    request.headers.update(signed_headers(publisher, stack.chain.chain_id, "POST", "/tasks", request.body))
    assert requests.Session().send(request).status_code == 201

    def signer(method: str, path: str) -> LocalAccount | None:
        return publisher if (method, path) in (("post", "/tasks"), ("put", "/tasks/{task_id}/test-set")) else None

    return Target(
        cloud.url, stack.chain.chain_id, signer, spec.task_id, publisher.address,
        lambda: (cloud_state(state_dir), edge_state(stack.settings[0].state_dir, blobs)),
    )  # fmt: skip


def send(target: Target, case: schemathesis.Case, account: LocalAccount | None) -> requests.Response:
    """Send the case, signed over its exact body and decoded path when ``account`` is given."""
    kwargs = case.as_transport_kwargs(base_url=target.url)
    kwargs.pop("cookies", None)
    request = requests.Request(**kwargs).prepare()
    if account is not None:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        path = unquote(urlsplit(request.url).path)
        request.headers.update(signed_headers(account, target.chain_id, request.method, path, body))
    with requests.Session() as session:
        return session.send(request, timeout=60)


def steer(case: schemathesis.Case, target: Target, draw: st.DataObject) -> None:
    """Point most cases at the task, round and vehicle that exist."""
    path = case.path_parameters or {}
    if "task_id" in path and draw.draw(st.booleans()):
        path["task_id"] = target.task_id
    if "round" in path and draw.draw(st.booleans()):
        path["round"] = 1
    if case.query and "vehicle" in case.query and draw.draw(st.booleans()):
        case.query["vehicle"] = target.vehicle
    if isinstance(case.body, dict) and "vehicle" in case.body and draw.draw(st.booleans()):
        case.body["vehicle"] = target.vehicle


def fuzz(target: Target) -> None:
    schema = schemathesis.openapi.from_url(target.url + "/openapi.json")
    last = [target.state()]
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:

            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), draw=st.data(), signed=st.integers(0, 9))
            def one(case: schemathesis.Case, draw: st.DataObject, signed: int) -> None:
                steer(case, target, draw)
                account = target.signer(operation.method, operation.path) if signed else None
                reply = send(target, case, account)
                target.statuses[reply.status_code] += 1
                where = f"{operation.method.upper()} {operation.path} ({mode.value}): {reply.status_code} {reply.text[:300]}"
                assert reply.status_code < 500, where
                now = target.state()
                if reply.status_code >= 400:
                    assert now == last[0], "state changed on a refused request: " + where
                last[0] = now

            try:
                one()
            except Unsatisfiable:  # no parameters or body to make invalid
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path


@pytest.mark.parametrize("service", ["edge", "cloud"])
def test_openapi_fuzz_has_no_server_errors(services: Services, service: str) -> None:
    target: Target = getattr(services, service)
    fuzz(target)
    print(f"{service}: {sum(target.statuses.values())} requests, statuses {dict(sorted(target.statuses.items()))}")
    assert sum(target.statuses.values()) >= EXAMPLES * 2
    assert all(status < 500 for status in target.statuses)


def test_the_edges_openapi_documents_signatures_and_reasons(services: Services) -> None:
    """Signed routes list the two signature headers, 401 and the 403 of their role check;
    the vehicles' upload lists every reason it refuses with."""
    schema = requests.get(services.edge.url + "/openapi.json", timeout=30).json()
    close = schema["paths"]["/tasks/{task_id}/rounds/{round}/close"]["post"]
    assert {p["name"] for p in close["parameters"] if p["in"] == "header"} == {"X-BMFL-Signature", "X-BMFL-Time"}
    assert "`not_cloud`" in close["responses"]["403"]["description"] and "`bad_signature`" in close["responses"]["401"]["description"]
    assert "`not_edge`" in schema["paths"]["/handover"]["post"]["responses"]["403"]["description"]
    upload = schema["paths"]["/tasks/{task_id}/rounds/{round}/updates"]["post"]
    assert not any(p["in"] == "header" for p in upload.get("parameters", []))  # vehicles sign the update itself
    text = json.dumps(upload["responses"])
    for reason in ("not_selected", "unregistered", "round_not_open", "deadline_passed", "duplicate", "wrong_round", "non_finite", "shape"):
        assert f"`{reason}`" in text, reason
