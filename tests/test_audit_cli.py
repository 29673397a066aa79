"""``bmfl audit`` on a real Anvil: a task run through the chain clients with real model
blobs in a local store served by a real gateway; the audit passes, and fails (exit 1)
on a tampered blob, a digest that does not match its CID, or a missing blob."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI
from typer.testing import CliRunner

from bmfl.blobs.codec import BlobMeta, blob_digest, encode_state
from bmfl.blobs.gateway import gateway_router
from bmfl.blobs.local import LocalBlobStore
from launcher.cli import app
from bmfl.models import create_model
from service_kit.serve import ServerThread
from chain.audit import Auditor
from chain_fixtures import Chain, chain, chain_module, digest  # noqa: F401

SELECTION = {0: [0, 1, 2], 1: [3, 4], 2: [5]}  # three edges: a consensus quorum
THETAS = {0: 500_000, 1: 300_000, 2: -1, 3: 700_000, 4: 100_000, 5: 200_000}  # vehicle 2 is malicious


@dataclass(frozen=True)
class Blob:
    cid: str
    digest: bytes


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def gateway(store: LocalBlobStore):
    api = FastAPI()
    api.include_router(gateway_router(store))
    with ServerThread(api) as server:
        yield server.url


@pytest.fixture
def deployment_file(chain: Chain, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    path.write_text(chain.deployment.model_dump_json())
    return path


def put_model(store: LocalBlobStore, seed: int) -> Blob:
    torch.manual_seed(seed)
    blob = encode_state(create_model("bmfl_cnn").state_dict(), BlobMeta(task="1", round=seed, producer="t", model="bmfl_cnn"))
    return Blob(store.put(blob), blob_digest(blob).raw)


def run_task(
    chain: Chain, store: LocalBlobStore, rounds: int = 2, finish: bool = True, lie_about: int | None = None,
    max_rounds: int | None = None,
) -> tuple[int, dict[str, Blob]]:
    """A task on chain with real blobs, ``rounds`` of its ``max_rounds`` run; ``lie_about``
    = an edge whose round-1 record names its preliminary CID with another blob's digest."""
    blobs = {"w0": put_model(store, 0)}
    w0 = blobs["w0"]
    params = chain.params(initial_model_digest=w0.digest, initial_model_cid=w0.cid, max_rounds=max_rounds or rounds)
    task_id, _ = chain.tasks(chain.publisher).create_task(params, 10**18)
    cloud = chain.tasks(chain.cloud)
    current = blobs["w0"]
    for r in range(1, rounds + 1):
        cloud.start_round(task_id, current.digest, current.cid)
        for e, vehicles in SELECTION.items():
            p = blobs[f"p{r}.{e}"] = put_model(store, 10 * r + e + 1)
            digest = blobs["w0"].digest if (r, e) == (1, lie_about) else p.digest
            records = chain.records(task_id, r, e, vehicles, THETAS)
            chain.tasks(chain.edges[e]).record_round(task_id, r, digest, p.cid, 100 * len(vehicles), records)
        chain.close(task_id)  # edges 3 and 4 never record: past the deadline
        for e in SELECTION:
            chain.tasks(chain.edges[e]).submit_scores(task_id, [800_000 + r, 700_000 + e, 600_000])
        current = blobs[f"g{r}"] = put_model(store, 100 + r)
        cloud.finalize_round(task_id, current.digest, current.cid, 900_000)
    if finish:
        chain.tasks(chain.outsider).finish_task(task_id)
    return task_id, blobs


def audit(task_id: int, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "--task", str(task_id), *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_audit_of_a_finished_task_passes(chain: Chain, store: LocalBlobStore, gateway: str, deployment_file: Path) -> None:
    task_id, _ = run_task(chain, store)
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--gateway", gateway)
    assert code == 0, out
    assert "audit passed" in out
    result = Auditor(chain.w3, chain.deployment).audit(task_id, store.get)
    assert result.passed and len(result.blobs) == 1 + 2 + 6 + 2  # initial, starts, preliminaries, globals
    paid = {c.subject.split()[1] for c in result.comparisons if c.section == "vehicle payout"}
    assert paid == {"0", "1", "3", "4", "5"}  # the malicious vehicle 2 earns nothing
    sections = {c.section for c in result.comparisons}
    assert {"signature", "protocol", "median", "leader", "edge book", "block reward", "total"} <= sections
    # the deployment found by chain id in a directory, blobs read from the store directly
    deployments = deployment_file.parent / "deployments"
    deployments.mkdir()
    (deployments / f"{chain.deployment.chain_id}.json").write_text(deployment_file.read_text())
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployments", str(deployments), "--store", str(store.root))
    assert code == 0, out


def test_audit_of_a_running_task_checks_block_rewards(chain: Chain, store: LocalBlobStore) -> None:
    task_id, _ = run_task(chain, store, rounds=2, finish=False)
    result = Auditor(chain.w3, chain.deployment).audit(task_id, store.get)
    assert result.passed
    assert not [c for c in result.comparisons if c.section in ("vehicle payout", "publisher")]
    assert [c.recomputed for c in result.comparisons if c.section == "block reward"] == [2 * 10**15]  # edge 0 led both


def test_tampered_blob_fails_the_audit(chain: Chain, store: LocalBlobStore, gateway: str, deployment_file: Path) -> None:
    task_id, blobs = run_task(chain, store)
    path = store.path_of(blobs["p2.1"].cid)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-4] + b"evil")
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--gateway", gateway)
    assert code == 1 and "audit FAILED" in out  # the gateway cannot serve it: unreachable
    result = Auditor(chain.w3, chain.deployment).audit(task_id, store.get)
    bad = [b for b in result.blobs if not b.ok]
    assert [(b.blob.source, b.status) for b in bad] == [("round 2 edge 1 preliminary", "corrupt")]


def test_digest_that_does_not_match_the_cid_fails_the_audit(chain: Chain, store: LocalBlobStore, gateway: str, deployment_file: Path) -> None:
    task_id, _ = run_task(chain, store, lie_about=0)
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--gateway", gateway)
    assert code == 1 and "digest_mismatch" in out
    result = Auditor(chain.w3, chain.deployment).audit(task_id, store.get)
    assert [b.blob.source for b in result.blobs if not b.ok] == ["round 1 edge 0 preliminary"]
    assert all(c.ok for c in result.comparisons)  # the payouts themselves still agree


def test_missing_blob_fails_the_audit(chain: Chain, store: LocalBlobStore, gateway: str, deployment_file: Path) -> None:
    task_id, blobs = run_task(chain, store)
    store.path_of(blobs["g1"].cid).unlink()
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--gateway", gateway)
    assert code == 1 and "not_found" in out and "is not in the store" in out


def test_audit_refuses_two_blob_sources_and_names_a_missing_chain(chain: Chain, deployment_file: Path, tmp_path: Path) -> None:
    code, out = audit(1, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--gateway", "http://x", "--store", str(tmp_path))
    assert code == 2 and "at most one of --gateway and --store" in out
    code, out = audit(1, "--rpc", "http://127.0.0.1:9", "--run-dir", str(tmp_path))
    assert code == 2 and "no chain at http://127.0.0.1:9" in out
    code, out = audit(99, "--rpc", chain.node.url, "--deployment", str(deployment_file), "--no-blobs")
    assert code == 2 and "no task 99" in out


def stack_folder(chain: Chain, store: LocalBlobStore, run_dir: Path, cloud_url: str = "http://127.0.0.1:9") -> Path:
    """A run folder as ``bmfl up`` / ``bmfl demo`` leave it: stack.json, deployments/."""
    (run_dir / "deployments").mkdir(parents=True)
    (run_dir / "deployments" / f"{chain.deployment.chain_id}.json").write_text(chain.deployment.model_dump_json())
    services = [{"name": "cloud", "url": cloud_url}, {"name": "chain", "url": chain.node.url}]
    (run_dir / "stack.json").write_text(json.dumps({"run_dir": str(run_dir), "rpc_url": chain.node.url,
                                                    "blob_store": str(store.root), "services": services}))  # fmt: skip
    return run_dir


def test_audit_with_one_flag_against_a_run_folder_json_and_columns(chain: Chain, store: LocalBlobStore, tmp_path: Path) -> None:
    task_id, _ = run_task(chain, store)
    chain.tasks(chain.edges[0]).claim()  # edge 0 led both rounds: its block rewards, claimed
    run_dir = stack_folder(chain, store, tmp_path / "stack")
    code, out = audit(task_id, "--run-dir", str(run_dir))
    assert code == 0 and "audit passed" in out, out
    assert "1,000,000,000,000,000,000 wei (1 ETH)" not in out and "escrow 1000000000000000000 wei (1 ETH)" in out
    row = next(line for line in out.splitlines() if "block reward" in line)
    cells = [c.strip() for c in row.split("│")][1:-1]  # piped: every cell whole
    assert cells[2:] == ["2,000,000,000,000,000", "2,000,000,000,000,000", "0.002", "2,000,000,000,000,000", "0", "ok"]
    payout = next(line for line in out.splitlines() if "vehicle payout" in line)
    wei = [c.strip() for c in payout.split("│")][3:5]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3}){5}", w) for w in wei), wei  # 10¹⁷ wei, never cut
    code, raw = audit(task_id, "--run-dir", str(run_dir), "--json")
    data = json.loads(raw)
    assert code == 0 and data["passed"] and data["status"] == "finished" and data["escrow"] == 10**18
    assert len(data["blobs"]) == 11 and all(b["ok"] for b in data["blobs"])
    payouts = [c for c in data["comparisons"] if c["section"] == "vehicle payout"]
    assert payouts and all(isinstance(c["on_chain"], int) and c["ok"] for c in payouts)
    assert data["accounts"][chain.edges[0]] == {"claimed_wei": 2 * 10**15, "outstanding_wei": 0}
    code, raw = audit(task_id, "--run-dir", str(run_dir), "--json", "--no-blobs")
    assert code == 0 and json.loads(raw)["blobs"] == []
    # the old directory flag still works (hidden alias)
    code, out = audit(task_id, "--rpc", chain.node.url, "--deployments", str(run_dir / "deployments"), "--no-blobs")
    assert code == 0, out


def test_an_orphaned_task_is_explained(chain: Chain, store: LocalBlobStore, tmp_path: Path) -> None:
    params = chain.params(initial_model_digest=digest("never uploaded"), initial_model_cid=put_model(store, 7).cid)
    store.path_of(params.initial_model_cid).unlink()
    task_id, _ = chain.tasks(chain.publisher).create_task(params, 10**18)
    code, out = audit(task_id, "--run-dir", str(stack_folder(chain, store, tmp_path / "stack")))
    assert code == 1
    assert f"task {task_id} was escrowed but never started" in out and "bmfl tasks refund" in out
    assert "not_found" in out and "never uploaded" in out


def test_chain_tasks_lists_every_task(chain: Chain, store: LocalBlobStore, deployment_file: Path) -> None:
    task_id, _ = run_task(chain, store)
    result = CliRunner().invoke(app, ["chain", "tasks", "--rpc", chain.node.url, "--deployment", str(deployment_file), "--json"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.output) if r["task"] == task_id)
    assert row["publisher"] == chain.publisher and row["status"] == "finished" and row["round"] == 2
    assert row["escrow_wei"] == 10**18 and row["block_rewards_wei"] == 2 * 10**15
    result = CliRunner().invoke(app, ["chain", "tasks", "--rpc", chain.node.url, "--deployment", str(deployment_file)])
    line = next(x for x in result.output.splitlines() if x.startswith(f"{task_id}\t"))
    assert line.split("\t")[2:6] == ["finished", "2/2", "1000000000000000000", "1"]
    result = CliRunner().invoke(app, ["chain", "status", "--rpc", chain.node.url, "--deployment", str(deployment_file)])
    assert result.exit_code == 0 and "tasks" in result.output


def test_audit_of_a_cancelled_task_checks_the_refund(chain: Chain, store: LocalBlobStore) -> None:
    task_id, _ = run_task(chain, store, rounds=2, finish=False, max_rounds=3)
    chain.tasks(chain.cloud).start_round(task_id, digest("stalled"), "")  # a third round that never ends
    chain.stall(task_id)
    chain.tasks(chain.outsider).cancel_task(task_id)
    result = Auditor(chain.w3, chain.deployment).audit(task_id, store.get)
    refund = [c for c in result.comparisons if c.section == "publisher"]
    assert len(refund) == 1 and refund[0].ok and refund[0].recomputed == 10**18 - 2 * 10**15
    assert [b.status for b in result.blobs if not b.ok] == ["missing_cid"]  # the stalled round named no CID
    assert not result.passed
