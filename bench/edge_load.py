"""Load on one edge: many vehicles upload signed ``bmfl_cnn`` updates (87 KB each) at
once over loopback to one edge process (``python -m edge_node``) backed by a real Anvil.

Prints accepted updates per second, p50 / p99 latency, the edge's resident memory
before and at its peak, then proves that none was lost or counted twice: the edge's
progress and SQLite hold each vehicle once, replaying every upload gets 409
``duplicate`` for all of them, and after the close the chain's ``RoundRecorded``
holds every vehicle exactly once with the digest of what it sent.

The close aggregates with FedAvg and no filter by default; ``--aggregation default``
closes with the task default (``AggregationSpec()``; the task trains without DP, so its
leave-out testing runs the self-reliability test; issue 24 measured it with the
self-reliability filter and the repeated-median rule, whose buffers no longer grow with
K²). The peak printed last (and in the JSON) includes the close when it runs.

Usage: ``python bench/edge_load.py [--updates 500] [--workers 16] [--no-close]
[--aggregation fedavg|default]`` (documented figures: docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bmfl.blobs.codec import BlobMeta, blob_digest, encode_state  # noqa: E402
from bmfl.blobs.local import LocalBlobStore  # noqa: E402
from bmfl.data import load_dataset  # noqa: E402
from bmfl.models import create_model  # noqa: E402
from bmfl.protocol.schemas import AggregationSpec, EdgeTask, RuleSpec, TaskSpec, TrainingSpec  # noqa: E402
from bmfl.protocol.signing import associate_message, now_ms, sign, signed_headers, update_message  # noqa: E402
from bmfl.protocol.testset import encode_test_set  # noqa: E402
from launcher.stack import ServiceProcess  # noqa: E402
from launcher.topology import CLOUD, FIRST_EDGE, OPERATOR, PUBLISHER, settings_env  # noqa: E402
from chain.anvil import AnvilNode, dev_key, free_port  # noqa: E402
from chain.deploy import Deployment, deploy, save_deployment  # noqa: E402
from chain.registry import RegistryClient  # noqa: E402
from chain.tasks import TaskParams, TasksClient  # noqa: E402
from edge_node.settings import EdgeSettings  # noqa: E402

MODEL = "bmfl_cnn"


@dataclass(frozen=True)
class Outcome:
    status: int
    reason: str
    seconds: float


def register_fleet(w3: Web3, deployment: Deployment, count: int, seed: int = 0) -> list[tuple[LocalAccount, int]]:
    """``count`` fresh vehicles (category 1, 64 samples), funded with ``anvil_setBalance``
    and registered by their own signed transactions; returns (account, registry index)."""
    rng = random.Random(seed)
    accounts = [Account.from_key(rng.randbytes(32)) for _ in range(count)]
    registry = RegistryClient(w3, deployment.registry)
    gas_price = w3.eth.gas_price
    hashes = []
    for account in accounts:
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**18)])  # type: ignore[arg-type]
        fn = registry.contract.functions.registerVehicle(1, 0, 64, blob_digest(account.address.encode()).raw)
        tx = fn.build_transaction(
            {"from": account.address, "nonce": 0, "gas": 300_000, "gasPrice": gas_price, "chainId": deployment.chain_id}
        )
        hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    indices = [registry.receipt(w3.eth.wait_for_transaction_receipt(h)).event("VehicleRegistered").index for h in hashes]  # type: ignore[attr-defined]
    return list(zip(accounts, indices))


def associate(edge_url: str, edge: str, chain_id: int, accounts: list[LocalAccount], workers: int) -> None:
    def one(account: LocalAccount) -> int:
        ts = now_ms()
        signature = sign(account, associate_message(chain_id, account.address, edge, 0.0, 0.0, ts))
        body = {"vehicle": account.address, "x": 0.0, "y": 0.0, "timestamp_ms": ts, "signature": signature}
        return httpx.post(edge_url + "/associate", json=body, timeout=60).status_code

    with ThreadPoolExecutor(workers) as pool:
        statuses = Counter(pool.map(one, accounts))
    assert statuses == {200: len(accounts)}, statuses


def update_forms(
    initial: dict[str, torch.Tensor], task_id: int, edge: str, chain_id: int, fleet: list[tuple[LocalAccount, int]]
) -> list[tuple[dict, dict, str]]:
    """Per vehicle a distinct round-1 update (the initial model plus small noise), signed:
    (form fields, files, digest)."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for account, _ in fleet:
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=generator) for k, v in initial.items()}
        blob = encode_state(state, BlobMeta(str(task_id), 1, account.address, MODEL))
        signature = sign(account, update_message(chain_id, task_id, 1, edge, blob_digest(blob).raw))
        files = {"blob": ("update.safetensors", blob, "application/octet-stream")}
        out.append(({"vehicle": account.address, "signature": signature}, files, blob_digest(blob).hex0x))
    return out


def hammer(url: str, forms: list[tuple[dict, dict, str]], workers: int) -> tuple[list[Outcome], float]:
    """POST every form from ``workers`` threads at once; the outcomes and the wall time."""

    def one(form: tuple[dict, dict, str]) -> Outcome:
        start = time.perf_counter()
        reply = client.post(url, data=form[0], files=form[1])
        return Outcome(reply.status_code, reply.json().get("reason", ""), time.perf_counter() - start)

    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=workers)) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(one, forms))
    return outcomes, time.perf_counter() - start


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def run(updates: int, workers: int, close: bool, aggregation: str, directory: Path) -> None:
    node = AnvilNode(accounts=FIRST_EDGE + 1).start()
    edge_process = None
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        accounts = w3.eth.accounts
        dep = deploy(w3, accounts[OPERATOR], cloud=accounts[CLOUD])
        RegistryClient(w3, dep.registry, accounts[OPERATOR]).add_edge(accounts[FIRST_EDGE])
        deployment_file = save_deployment(dep, directory)
        store = LocalBlobStore(directory / "blobs")
        port = free_port()
        settings = EdgeSettings(
            rpc_url=node.url, deployment=deployment_file, private_key=dev_key(FIRST_EDGE), blob_store=str(directory / "blobs"),
            state_dir=directory / "edge", port=port,
        )  # fmt: skip
        edge_url, edge = f"http://127.0.0.1:{port}", accounts[FIRST_EDGE]
        edge_process = ServiceProcess("edge", [sys.executable, "-m", "edge_node"], settings_env(settings), edge_url, directory / "edge.log")
        edge_process.start()
        edge_process.wait_healthy()

        torch.manual_seed(0)
        initial_state = create_model(MODEL).state_dict()
        initial = encode_state(initial_state, BlobMeta("0", 0, "publisher", MODEL))
        initial_cid = store.put(initial, pin=True)
        test_set = encode_test_set(load_dataset("mnist")[1].subset(list(range(200))))
        params = TaskParams(
            block_reward=0, category=1, max_rounds=1, round_duration=3600, initial_model_digest=blob_digest(initial).raw,
            initial_model_cid=initial_cid, test_set_digest=blob_digest(test_set).raw,
        )  # fmt: skip
        task_id, _ = TasksClient(w3, dep.tasks, accounts[PUBLISHER]).create_task(params, 10**18)
        rule = AggregationSpec() if aggregation == "default" else AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[])
        spec = TaskSpec(task_id=task_id, model=MODEL, rounds=1, reward_wei=10**18, block_reward_wei=0,
                        round_duration_s=3600, training=TrainingSpec(epochs=1, dp=False), aggregation=rule)  # fmt: skip
        cloud = Account.from_key(dev_key(CLOUD))

        def as_cloud(method: str, path: str, **kwargs: object) -> httpx.Response:
            request = httpx.Request(method, edge_url + path, **kwargs)  # type: ignore[arg-type]
            request.headers.update(signed_headers(cloud, dep.chain_id, method, path, request.read()))
            with httpx.Client(timeout=600) as client:
                reply = client.send(request)
            assert reply.status_code == 200, reply.text
            return reply

        task = EdgeTask(spec=spec, test_set_digest=blob_digest(test_set).hex0x)
        as_cloud("PUT", f"/tasks/{task_id}", data={"task": task.model_dump_json()}, files={"test_set": ("t", test_set)})

        started = time.perf_counter()
        fleet = register_fleet(w3, dep, updates)
        associate(edge_url, edge, dep.chain_id, [a for a, _ in fleet], workers)
        TasksClient(w3, dep.tasks, accounts[CLOUD]).start_round(task_id, blob_digest(initial).raw, initial_cid)
        body = {"global_cid": initial_cid, "global_digest": blob_digest(initial).hex0x}
        selected = as_cloud("POST", f"/tasks/{task_id}/rounds/1/open", json=body).json()["selected"]
        assert sorted(selected) == sorted(i for _, i in fleet)
        forms = update_forms(initial_state, task_id, edge, dep.chain_id, fleet)
        print(f"setup: {updates} vehicles registered, associated and selected; {len(forms[0][1]['blob'][1]):,} B per update "
              f"({time.perf_counter() - started:.1f} s)")  # fmt: skip

        url = f"{edge_url}/tasks/{task_id}/rounds/1/updates"
        before = memory_kib(edge_process.pid)  # type: ignore[arg-type]
        outcomes, wall = hammer(url, forms, workers)
        after = memory_kib(edge_process.pid)  # type: ignore[arg-type]
        statuses = Counter((o.status, o.reason) for o in outcomes)
        latencies = [o.seconds * 1000 for o in outcomes]
        accepted = statuses[(202, "")]
        print(f"load: {len(forms)} uploads from {workers} threads in {wall:.2f} s: {dict(statuses)}")
        print(f"  accepted/s {accepted / wall:.1f}; latency p50 {quantile(latencies, 0.5):.0f} ms, "
              f"p99 {quantile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms")  # fmt: skip
        print(f"  edge RSS {before['VmRSS'] / 1024:.0f} MiB before, {after['VmRSS'] / 1024:.0f} MiB after, "
              f"peak {after['VmHWM'] / 1024:.0f} MiB")  # fmt: skip

        replays, replay_wall = hammer(url, forms, workers)
        replayed = Counter((o.status, o.reason) for o in replays)
        progress = httpx.get(f"{edge_url}/tasks/{task_id}/rounds/1").json()
        with sqlite3.connect(settings.state_dir / "edge.sqlite3") as db:
            rows = db.execute("SELECT vehicle, digest FROM updates WHERE task_id = ?", (task_id,)).fetchall()
        expected = {i: f[2] for (_, i), f in zip(fleet, forms)}
        print(f"replay: {len(replays)} uploads again in {replay_wall:.2f} s: {dict(replayed)}")
        lost = set(expected) - set(progress["received"])
        print(f"check: progress lists {len(progress['received'])} vehicles, SQLite {len(rows)} rows, "
              f"{len({v for v, _ in rows})} distinct; lost {len(lost)}")  # fmt: skip
        assert accepted == updates and replayed == {(409, "duplicate"): updates}
        assert sorted(progress["received"]) == sorted(expected) and dict(rows) == expected

        if close:
            start = time.perf_counter()
            recorded = as_cloud("POST", f"/tasks/{task_id}/rounds/1/close").json()
            recorded_rounds = TasksClient(w3, dep.tasks).recorded_rounds(task_id, dep.block_number)
            records = [r for rr in recorded_rounds for r in rr.decoded()]
            on_chain = {r.vehicle: "0x" + r.update_digest.hex() for r in records}
            after = memory_kib(edge_process.pid)  # type: ignore[arg-type]
            print(f"close ({aggregation}): {len(recorded['trainers'])} trainers aggregated and recorded in {time.perf_counter() - start:.1f} s; "
                  f"on chain {len(records)} records, {len(on_chain)} distinct, digests equal: {on_chain == expected}; "
                  f"edge RSS peak {after['VmHWM'] / 1024:.0f} MiB")  # fmt: skip
            assert len(records) == updates and on_chain == expected
        print(json.dumps({
            "updates": updates, "workers": workers, "wall_s": round(wall, 3), "accepted_per_s": round(accepted / wall, 1),
            "p50_ms": round(quantile(latencies, 0.5), 1), "p99_ms": round(quantile(latencies, 0.99), 1),
            "rss_before_mib": round(before["VmRSS"] / 1024), "rss_peak_mib": round(after["VmHWM"] / 1024),
        }))  # fmt: skip
    finally:
        if edge_process is not None:
            edge_process.stop()
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--no-close", dest="close", action="store_false", help="skip the close and the on-chain check")
    parser.add_argument("--aggregation", choices=["fedavg", "default"], default="fedavg", help="the edge's rule at the close")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args.updates, args.workers, args.close, args.aggregation, Path(tmp))


if __name__ == "__main__":
    main()
