"""What an operator watches, from real processes (launcher.stack: Anvil, one edge and
the cloud as uvicorn processes with JSON logs): a one-round task with three vehicles
uploading over HTTP, plus refused uploads (unsigned, bad signature, duplicate, a blob the
store lacks). The services' own ``/metrics`` then show the round, the phase, each
upload outcome, the close and round durations, the blob error and, once the chain node
is stopped, the chain error — nobody having read
``/healthz`` since the task began — and every log line is a JSON object, with the task
and round on the round events and the access lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families
from web3 import Web3

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.local import LocalBlobStore
from bmfl.data import load_dataset
from bmfl.protocol.schemas import TaskDraft, TaskSpec, TrainingSpec
from service_kit.chain_access import connect
from launcher.publisher import Publisher
from launcher.stack import FIRST_EDGE, PUBLISHER, LocalStack
from chain.anvil import AnvilNode, dev_key
from chain.deploy import Deployment
from service_fixtures import ServiceChain, Vehicle, association_request, register_vehicle, update_blob, update_form
from tooling import requires_anvil

pytestmark = [pytest.mark.slow, requires_anvil]


@dataclass
class Run:
    stack: LocalStack
    task_id: int
    selected: int
    refused: dict[str, int]


def chain_view(stack: LocalStack) -> ServiceChain:
    w3 = Web3(Web3.HTTPProvider(stack.rpc_url))
    assert stack.deployment_file is not None
    deployment = Deployment.model_validate_json(stack.deployment_file.read_text())
    url = urlsplit(stack.rpc_url)
    node = AnvilNode(host=str(url.hostname), port=url.port)  # only its URL is used
    return ServiceChain(node, w3, deployment, stack.deployment_file, [dev_key(FIRST_EDGE)])


def poll(what: str, probe, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with LocalStack(tmp_path_factory.mktemp("ops"), edges=1, round_timeout_s=120, log_format="json") as stack:
        chain = chain_view(stack)
        edge_url, edge = stack.edge_services[0].url, Account.from_key(dev_key(FIRST_EDGE)).address
        train, test = load_dataset("mnist")
        vehicles: list[Vehicle] = []
        for i in range(3):
            vehicle = register_vehicle(chain, train.subset(list(range(64 * i, 64 * (i + 1)))))
            assert httpx.post(edge_url + "/associate", json=association_request(vehicle.account, chain.chain_id, edge)).status_code == 200
            vehicles.append(vehicle)
        publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
        draft = TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=10**15, training=TrainingSpec(epochs=1, batch_size=32, dp=False))
        spec = TaskSpec.model_validate(publisher.publish(draft, test.subset(list(range(200))))["spec"])
        task_id, url = spec.task_id, f"{edge_url}/tasks/{spec.task_id}/rounds/1/updates"

        def assignment() -> dict | None:
            a = httpx.get(f"{edge_url}/tasks/{task_id}/assignment", params={"vehicle": vehicles[0].address}).json()
            return a if a.get("round") == 1 and a.get("open") else None

        global_blob = LocalBlobStore(stack.blob_store).get(poll("round 1 open", assignment)["global_cid"])
        blobs = {v.address: update_blob(global_blob, spec, 1, v, seed=v.index) for v in vehicles}
        first = vehicles[0]
        data, files = update_form(first.account, chain.chain_id, task_id, 1, edge, blobs[first.address])
        refused = {
            "unsigned": httpx.post(url, data={"vehicle": first.address}, files=files),
            "bad_signature": httpx.post(url, data=data | {"signature": "0x" + "11" * 65}, files=files),
            "blob_unavailable": httpx.post(url, data=data | {"cid": str(compute_cid(b"no such blob"))}),
        }
        forms = [update_form(v.account, chain.chain_id, task_id, 1, edge, blobs[v.address]) for v in vehicles]
        accepted = [httpx.post(url, data=d, files=f) for d, f in forms[:2]]
        resent = httpx.post(url, data=data, files=files)  # the same update again: its receipt, counted apart
        other = update_form(first.account, chain.chain_id, task_id, 1, edge, update_blob(global_blob, spec, 1, first, seed=99))
        refused["duplicate"] = httpx.post(url, data=other[0], files=other[1])  # before the last upload lets the cloud close
        accepted.append(httpx.post(url, data=forms[2][0], files=forms[2][1]))
        assert [r.status_code for r in accepted] == [202] * 3, [r.text for r in accepted]
        assert (resent.status_code, resent.json()) == (202, accepted[0].json())
        for reason, reply in refused.items():
            assert reply.status_code >= 400 and reply.json()["reason"] == reason, (reason, reply.text)
        poll("task finished", lambda: httpx.get(f"{stack.cloud.url}/tasks/{task_id}").json()["status"] == "finished")
        phase = ("bmfl_task_phase", (("bmfl_task_phase", "finished"), ("task", str(task_id))))
        poll("the cloud's metrics see the finish", lambda: samples(stack.cloud.url).get(phase) == 1)  # before the chain stops
        stack.services["chain"].stop()  # last: the edge's health check meets an unreachable chain node
        down = httpx.get(edge_url + "/healthz")
        assert down.status_code == 503 and down.json()["reason"] == "chain_unavailable", down.text
        yield Run(stack, task_id, len(accepted), {k: 1 for k in refused})


def samples(url: str) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as (sample name, sorted labels) → value."""
    text = httpx.get(url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_edge_counts_uploads_by_outcome_and_times_the_close(run: Run) -> None:
    m = samples(run.stack.edge_services[0].url)
    uploads = {dict(labels)["outcome"]: v for (name, labels), v in m.items() if name == "bmfl_edge_uploads_total"}
    assert uploads == {"accepted": run.selected, "resent": 1, **run.refused}
    assert m[("bmfl_edge_task_round", (("task", str(run.task_id)),))] == 1
    assert m[("bmfl_edge_round_close_seconds_count", ())] == 1 and m[("bmfl_edge_round_close_seconds_sum", ())] > 0
    assert m[("bmfl_blob_errors_total", (("kind", "unavailable"),))] == 1
    assert {dict(labels)["kind"]: v for (name, labels), v in m.items() if name == "bmfl_chain_errors_total"} == {"unreachable": 1}


def test_the_cloud_shows_round_phase_and_round_time_without_healthz(run: Run) -> None:
    m = samples(run.stack.cloud.url)
    task = ("task", str(run.task_id))
    assert m[("bmfl_task_round", (task,))] == 1
    phases = {dict(labels)["bmfl_task_phase"]: v for (name, labels), v in m.items() if name == "bmfl_task_phase"}
    assert phases["finished"] == 1 and sum(phases.values()) == 1
    assert m[("bmfl_round_seconds_count", ())] == 1 and m[("bmfl_round_seconds_sum", ())] > 0
    assert m[("bmfl_tasks_published_total", ())] == 1


def json_lines(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_logs_are_json_with_task_and_round_events_and_access_lines(run: Run) -> None:
    logs = run.stack.run_dir / "logs"
    cloud, edge = json_lines(logs / "cloud.log"), json_lines(logs / "edge-0.log")
    for lines, service in ((cloud, "cloud"), (edge, "edge")):
        assert all({"ts", "level", "service", "logger", "message"} <= set(line) for line in lines)
        assert {line["service"] for line in lines} == {service}
    events = [line["message"] for line in cloud if line.get("task") == run.task_id and line.get("round") == 1 and line["logger"] == "bmfl.cloud"]
    assert any("round 1 started" in e for e in events) and any("round 1 finalized" in e for e in events)
    assert any("opened" in line["message"] for line in edge if line.get("round") == 1 and line.get("task") == run.task_id)
    access = [line for line in edge if line["logger"] == "bmfl.access" and line["path"].endswith("/rounds/1/updates")]
    assert sorted(line["status"] for line in access) == sorted([202] * (run.selected + 1) + [401, 401, 409, 422])  # + the re-send
    assert all(line["task"] == run.task_id and line["round"] == 1 and line["method"] == "POST" for line in access)
