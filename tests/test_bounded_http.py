"""Bounded HTTP (service_kit.bounded) against a real edge and a real cloud, each its own
process (``python -m edge_node`` / ``python -m cloud_aggregator``, as the stack runs
them) with ``TMPDIR`` set to a fresh directory: unsigned 400 MB bodies to the signed
routes, a 900-part upload, an 800 MB file part, a 400 MB body behind well-formed
signature headers and a declared 400 MB ``Content-Length`` each get their 4xx and reason, the
server's peak RSS stays within 50 MB of its baseline, nothing is written to disk and no
state changes. The clients stream their bodies from generators and never hold them."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account import Account

from bmfl.blobs.codec import BlobMeta, encode_state
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.protocol.signing import signed_headers
from bmfl.protocol.testset import encode_test_set
from chain.anvil import dev_key, free_port
from launcher.procs import spawn, stop_group
from security_fixtures import cloud_state, edge_state
from service_fixtures import CLOUD, MODEL, ServiceChain, TaskData, create_task
from service_fixtures import service_chain  # noqa: F401

MB = 1 << 20
RSS_SLACK = 50 * MB
ROOT = Path(__file__).resolve().parent.parent


def stream(total: int, chunk: bytes = bytes(MB)) -> Iterator[bytes]:
    """``total`` bytes, one chunk at a time (the client never holds them)."""
    for _ in range(total // len(chunk)):
        yield chunk


def parts(count: int, name: str = "blob", size: int = MB, boundary: str = "b0undary") -> Iterator[bytes]:
    """A multipart body of ``count`` file parts called ``name``, generated part by part."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="u"\r\n\r\n'.encode()
    data = bytes(size)
    for _ in range(count):
        yield head + data + b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def multipart(boundary: str = "b0undary") -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={boundary}"}


@dataclass
class Service:
    """A service process: its URL, pid, the directory it writes under and its TMPDIR."""

    url: str
    pid: int
    root: Path
    tmp: Path

    def status(self, field: str) -> int:
        """``VmRSS`` / ``VmHWM`` of the process, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak(self) -> None:
        """Reset ``VmHWM`` to the current RSS (``/proc/<pid>/clear_refs``, Linux ≥ 4.0)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def disk(self) -> list[tuple[str, int]]:
        """Every file the service has under its directory, with its size (TMPDIR included)."""
        return sorted((str(p.relative_to(self.root)), p.stat().st_size) for p in self.root.rglob("*") if p.is_file())


def start(module: str, env: dict[str, str], root: Path) -> tuple[Service, int]:
    """``python -m module`` with ``env`` and a fresh TMPDIR under ``root``; waits for /healthz."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True)
    port = free_port()
    prefix = "BMFL_EDGE_" if module == "edge_node" else "BMFL_CLOUD_"
    full = {
        **os.environ, **env, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        prefix + "PORT": str(port), prefix + "HOST": "127.0.0.1",
    }  # fmt: skip
    log = root.parent / f"{root.name}.log"  # beside the service's directory: access logs grow
    proc = spawn([sys.executable, "-m", module], full, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return Service(url, proc.pid, root, tmp), proc.pid
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc.pid)
            raise RuntimeError(f"{module} did not answer: {log.read_text()[-2000:]}")
        time.sleep(0.3)


@dataclass
class Services:
    chain: ServiceChain
    edge: Service
    cloud: Service
    task_id: int


@pytest.fixture(scope="module")
def services(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("bounded")
    torch.manual_seed(0)
    initial = encode_state(create_model(MODEL).state_dict(), BlobMeta("0", 0, "publisher", MODEL))
    test_set = encode_test_set(TensorData(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64), 10))
    data = TaskData(None, test_set, initial, "bafy-initial")  # type: ignore[arg-type]  (no training data needed)
    task = create_task(service_chain, data)
    common = {"RPC_URL": service_chain.rpc_url, "DEPLOYMENT": str(service_chain.deployment_file)}
    edge_env = {f"BMFL_EDGE_{k}": v for k, v in common.items()} | {
        "BMFL_EDGE_PRIVATE_KEY": service_chain.edge_keys[0], "BMFL_EDGE_BLOB_STORE": str(root / "edge" / "blobs"),
        "BMFL_EDGE_STATE_DIR": str(root / "edge" / "state"), "BMFL_EDGE_MAX_TEST_SET_BYTES": str(8 * MB),
    }  # fmt: skip
    edge, edge_pid = start("edge_node", edge_env, root / "edge")
    cloud_env = {f"BMFL_CLOUD_{k}": v for k, v in common.items()} | {
        "BMFL_CLOUD_PRIVATE_KEY": dev_key(CLOUD), "BMFL_CLOUD_BLOB_STORE": str(root / "cloud" / "blobs"),
        "BMFL_CLOUD_STATE_DIR": str(root / "cloud" / "state"), "BMFL_CLOUD_EDGES": json.dumps([{"url": edge.url}]),
        "BMFL_CLOUD_MAX_BLOB_BYTES": str(8 * MB),
    }  # fmt: skip
    try:
        cloud, cloud_pid = start("cloud_aggregator", cloud_env, root / "cloud")
    except Exception:
        stop_group(edge_pid)
        raise
    try:
        yield Services(service_chain, edge, cloud, task.task_id)
    finally:
        stop_group(cloud_pid)
        stop_group(edge_pid)


def test_huge_and_many_part_bodies_leave_memory_disk_and_state_alone(services: Services) -> None:
    edge, cloud, task_id = services.edge, services.cloud, services.task_id
    cloud_account = Account.from_key(dev_key(CLOUD))
    put_task = f"/tasks/{task_id}"
    # headers that pass the early check (65 bytes of hex, fresh time) but sign another body
    well_formed = signed_headers(cloud_account, services.chain.chain_id, "PUT", put_task, b"another body")
    declared = {"content-type": "application/json", "content-length": str(400 * MB)}
    cases: list[tuple[str, Service, str, str, dict[str, Any], int, str]] = [
        ("unsigned 400 MB handover", edge, "POST", "/handover", {"content": stream(400 * MB)}, 401, "unsigned"),
        ("unsigned 400 MB task", edge, "PUT", put_task, {"content": parts(400, "test_set"), "headers": multipart()}, 401, "unsigned"),
        ("unsigned 400 MB publication", cloud, "POST", "/tasks", {"content": parts(400, "initial_model"), "headers": multipart()}, 401, "unsigned"),
        ("900 one-megabyte parts in one upload", edge, "POST", f"/tasks/{task_id}/rounds/1/updates", {"content": parts(900), "headers": multipart()}, 422, "repeated_part"),
        ("900 parts of 900 names", edge, "POST", f"/tasks/{task_id}/rounds/1/updates", {"content": (c for i in range(900) for c in parts(1, f"p{i}")), "headers": multipart()}, 422, "unknown_part"),
        ("an 800 MB file part for an unknown task", edge, "POST", "/tasks/999999/rounds/1/updates", {"content": parts(1, size=800 * MB), "headers": multipart()}, 413, "too_large"),
        ("400 MB behind well-formed signature headers", edge, "PUT", put_task, {"content": stream(400 * MB), "headers": well_formed}, 413, "body_too_large"),
        ("declared Content-Length of 400 MB", edge, "POST", "/associate", {"content": stream(400 * MB), "headers": declared}, 413, "body_too_large"),
        ("a 400 MB JSON body to a public route", cloud, "GET", "/tasks", {"content": stream(400 * MB)}, 413, "body_too_large"),
    ]  # fmt: skip

    def send(service: Service, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            return client.request(method, service.url + path, **kwargs)

    def state() -> tuple:
        return (
            edge_state(edge.root / "state", edge.root / "blobs"), cloud_state(cloud.root / "state"),
            edge.disk(), cloud.disk(),
        )  # fmt: skip

    # warm up: every route once with a small refused body, so lazy imports and caches settle
    for _, service, method, path, kwargs, _, _ in cases:
        small = {k: v for k, v in kwargs.items() if k == "headers" and "content-length" not in v}
        send(service, method, path, {**small, "content": b"{}"})
    before = state()
    assert not list(edge.tmp.iterdir()) and not list(cloud.tmp.iterdir())
    baseline = {s.pid: s.status("VmRSS") for s in (edge, cloud)}
    for service in (edge, cloud):
        service.reset_peak()
    for name, service, method, path, kwargs, status, reason in cases:
        reply = send(service, method, path, kwargs)
        assert (reply.status_code, reply.json().get("reason")) == (status, reason), f"{name}: {reply.text[:300]}"
        growth = service.status("VmHWM") - baseline[service.pid]
        print(f"{name}: {reply.status_code} {reply.json()['reason']}, peak RSS +{growth / MB:.1f} MB")  # docs/security.md
        assert growth < RSS_SLACK, f"{name}: peak RSS {growth / MB:.0f} MB over the baseline"
        assert state() == before, name
    assert not list(edge.tmp.iterdir()) and not list(cloud.tmp.iterdir())
    # and the services still serve
    assert httpx.get(edge.url + "/healthz").status_code == 200
    assert httpx.get(cloud.url + "/healthz").status_code == 200
