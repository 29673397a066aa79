"""Verified uploads per second into one edge on loopback: N registered, selected
vehicles post their signed updates (the 21,840-parameter CNN as safetensors, ~88 kB)
to a real edge (``LocalStack``, one edge, Anvil) from ``--concurrency`` client threads;
the edge runs every check of ``docs/protocol.md`` (round open on chain and at the edge,
deadline, registration, selection, EIP-191 signature, duplicate, strict decoding) and
stores each blob. Baseline: the same multipart requests into ``bench.intake_sink``, an
endpoint that checks nothing and writes the blob to disk, run before and after ours.
Forms are signed before the clock starts; only the requests are timed.

    python -m bench.intake [--vehicles 60 --concurrency 4]
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

from bench.common import Row, console, median, print_rows, progress
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

Request = tuple[str, dict[str, str], bytes]  # url path, form, blob


def _post_all(base_url: str, requests: list[Request], concurrency: int) -> float:
    """Seconds to post every request (all must be accepted, HTTP 202)."""
    local = threading.local()

    def post(req: Request) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        path, form, blob = req
        reply = local.client.post(base_url + path, data=form, files={"blob": ("update.safetensors", blob)})
        if reply.status_code != 202:
            raise RuntimeError(f"upload refused: HTTP {reply.status_code} {reply.text[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, requests))
    return time.perf_counter() - start


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


def _selected_uploads(fleet: Fleet, task_id: int) -> list[Request]:
    """Wait until every vehicle is selected in an open round; its signed upload."""
    model = create_model("bmfl_cnn")
    requests = []
    for vehicle in fleet.vehicles:
        edge = fleet.edge_of(vehicle)
        for _ in range(600):
            a = vehicle.poll(edge.url, task_id)
            if a.open and a.selected:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"vehicle {vehicle.index} was never selected")
        blob = encode_state(model.state_dict(), BlobMeta(str(task_id), a.round, vehicle.address, "bmfl_cnn"))
        form = vehicle.upload_form(edge.address, task_id, a.round, blob, 1.0)
        requests.append((f"/tasks/{task_id}/rounds/{a.round}/updates", form, blob))
    return requests


def run(vehicles: int = 60, concurrency: int = 4) -> list[Row]:
    if find_anvil() is None:
        console.print("[yellow]intake skipped[/]: no Anvil binary (npm ci)")
        return [Row("intake", "verified uploads into one edge", float("nan"), "unverified sink", None, "uploads/s",
                    "throughput", note="skipped: no Anvil")]  # fmt: skip
    train, test = load_dataset("mnist")
    with progress() as bar, tempfile.TemporaryDirectory(prefix="bmfl-intake-") as tmp:
        task = bar.add_task(f"intake: {vehicles} uploads, sink / edge / sink", total=4)
        with LocalStack(Path(tmp) / "stack", edges=1) as stack:
            fleet = Fleet(
                FleetSettings(
                    cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                    funder_key=dev_key(OPERATOR), vehicles=vehicles, seed=1,
                ),
                train_data=train, console=console,
            )  # fmt: skip
            fleet.setup()
            publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
            task_id = publisher.publish(TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=0), test)["task_id"]
            requests = _selected_uploads(fleet, task_id)
            bar.advance(task)
            sink, sink_url = _sink(Path(tmp))
            try:
                baseline = [_post_all(sink_url, requests, concurrency)]
                bar.advance(task)
                ours = _post_all(fleet.edge_of(fleet.vehicles[0]).url, requests, concurrency)
                bar.advance(task)
                baseline.append(_post_all(sink_url, requests, concurrency))
                bar.advance(task)
            finally:
                sink.terminate()
                sink.wait(10)
                fleet.close()
    size = len(requests[0][2])
    load = os.getloadavg()[0]
    note = f"{vehicles} uploads of {size / 1e3:.0f} kB, {concurrency} client threads; sink: median of 2; load {load:.1f} after"
    return [Row("intake", "verified uploads into one edge", vehicles / ours, "unverified sink (same requests)",
                vehicles / median(baseline), "uploads/s", "throughput", note=note)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print_rows("update intake on loopback", run(args.vehicles, args.concurrency))


if __name__ == "__main__":
    main()
