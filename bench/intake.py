"""Verified uploads per second into one edge on loopback: N registered, selected
vehicles upload their signed updates (the 21,840-parameter CNN as safetensors, ~88 kB)
to a real edge (``LocalStack``, one edge, Anvil) from ``--concurrency`` client threads,
half of them as multipart forms (``POST …/updates``), half as binary bodies with the
signature in a header (``PUT …/updates/{vehicle}``); the edge runs every check of
``docs/protocol.md`` (round open on chain and at the edge, deadline, registration,
selection, EIP-191 signature, duplicate, strict decoding) and stores each blob.
Baseline: the same requests into ``bench.intake_sink``, endpoints that check nothing
and write the blob to disk, run before and after ours. Uploads are signed before the
clock starts; only the requests are timed, each batch once the edge is idle (it scores
the accepted updates on its test set after a burst: that work must not fall into the
next batch's time).

    python -m bench.intake [--vehicles 600 --concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import Row, console, median, print_rows, progress, tree_cpu_seconds
from bmfl.blobs.codec import BlobMeta, encode_state
from bmfl.data import load_dataset
from bmfl.models import create_model
from bmfl.protocol.schemas import TaskDraft
from service_kit.chain_access import connect
from launcher.stack import OPERATOR, PUBLISHER, LocalStack
from chain.anvil import dev_key, find_anvil, free_port
from launcher.publisher import Publisher
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

Request = tuple[str, dict[str, str], bytes]  # url path, form (multipart) or headers (binary), blob


def _post_all(base_url: str, requests: list[Request], concurrency: int, binary: bool) -> float:
    """Seconds to send every request (all must be accepted, HTTP 202)."""
    local = threading.local()

    def post(req: Request) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        path, fields, blob = req
        if binary:
            reply = local.client.put(base_url + path, content=blob, headers=fields)
        else:
            reply = local.client.post(base_url + path, data=fields, files={"blob": ("update.safetensors", blob)})
        if reply.status_code != 202:
            raise RuntimeError(f"upload refused: HTTP {reply.status_code} {reply.text[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, requests))
    return time.perf_counter() - start


def _wait_idle(pid: int, timeout_s: float = 600.0) -> None:
    """Until the process ``pid`` uses under 5 % of a core over half a second (Linux)."""
    if not Path(f"/proc/{pid}/stat").exists():
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(0.5)
        if tree_cpu_seconds(pid) - before < 0.025:
            return


def _sink(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"BENCH_SINK_DIR": str(tmp / "sink"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.intake_sink:app", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the intake sink did not start")


def _selected_uploads(fleet: Fleet, task_id: int) -> tuple[list[Request], list[Request]]:
    """Wait until every vehicle is selected in an open round; the first half's signed
    multipart uploads and the second half's binary ones."""
    model = create_model("bmfl_cnn")
    forms, bodies = [], []
    half = len(fleet.vehicles) // 2
    for i, vehicle in enumerate(fleet.vehicles):
        edge = fleet.edge_of(vehicle)
        for _ in range(600):
            a = vehicle.poll(edge.url, task_id)
            if a.open and a.selected:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"vehicle {vehicle.index} was never selected")
        blob = encode_state(model.state_dict(), BlobMeta(str(task_id), a.round, vehicle.address, "bmfl_cnn"))
        path = f"/tasks/{task_id}/rounds/{a.round}/updates"
        if i < half:
            forms.append((path, vehicle.upload_form(edge.address, task_id, a.round, blob, 1.0), blob))
        else:
            headers = vehicle.upload_headers(edge.address, task_id, a.round, blob, 1.0)
            bodies.append((f"{path}/{vehicle.address}", headers, blob))
    return forms, bodies


def _row(route: str, requests: list[Request], ours: float, baseline: list[float], concurrency: int) -> Row:
    load = os.getloadavg()[0]
    note = (f"{len(requests)} uploads of {len(requests[0][2]) / 1e3:.0f} kB, {concurrency} client threads; "
            f"sink: median of 2; load {load:.1f} after")  # fmt: skip
    return Row("intake", f"verified uploads into one edge, {route}", len(requests) / ours,
               f"unverified sink, {route} (same requests)", len(requests) / median(baseline), "uploads/s", "throughput",
               note=note)  # fmt: skip


def run(vehicles: int = 600, concurrency: int = 4) -> list[Row]:
    if find_anvil() is None:
        console.print("[yellow]intake skipped[/]: no Anvil binary (npm ci)")
        return [Row("intake", "verified uploads into one edge", float("nan"), "unverified sink", None, "uploads/s",
                    "throughput", note="skipped: no Anvil")]  # fmt: skip
    train, test = load_dataset("mnist")
    rows = []
    with progress() as bar, tempfile.TemporaryDirectory(prefix="bmfl-intake-") as tmp:
        task = bar.add_task(f"intake: {vehicles} uploads, sink / edge / sink, multipart then binary", total=7)
        with LocalStack(Path(tmp) / "stack", edges=1) as stack:
            fleet = Fleet(
                FleetSettings(
                    cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                    funder_key=dev_key(OPERATOR), vehicles=vehicles, seed=1, partition="iid",
                ),
                train_data=train, console=console,
            )  # fmt: skip
            fleet.setup()
            publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
            task_id = publisher.publish(TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=0), test)["task_id"]
            uploads = _selected_uploads(fleet, task_id)
            bar.advance(task)
            sink, sink_url = _sink(Path(tmp))
            edge_url, edge_pid = fleet.edge_of(fleet.vehicles[0]).url, stack.edge_services[0].pid
            try:
                for route, requests, binary in zip(("multipart", "binary"), uploads, (False, True)):
                    _wait_idle(edge_pid)  # type: ignore[arg-type]
                    baseline = [_post_all(sink_url, requests, concurrency, binary)]
                    bar.advance(task)
                    ours = _post_all(edge_url, requests, concurrency, binary)
                    bar.advance(task)
                    _wait_idle(edge_pid)  # type: ignore[arg-type]
                    baseline.append(_post_all(sink_url, requests, concurrency, binary))
                    bar.advance(task)
                    rows.append(_row(route, requests, ours, baseline, concurrency))
            finally:
                sink.terminate()
                sink.wait(10)
                fleet.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=600, help="uploads in all, half on each route")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print_rows("update intake on loopback", run(args.vehicles, args.concurrency))


if __name__ == "__main__":
    main()
