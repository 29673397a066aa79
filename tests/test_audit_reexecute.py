"""``bmfl audit --reexecute`` on a real stack: Anvil, three edge servers and the cloud as
real uvicorn servers on loopback, one local blob store, a vehicle fleet over HTTP keeping
its receipts, a task published by the publisher's client. An honest task re-executes
clean; in the same setting one edge lies in round 1 (θ of a vehicle, an honest vehicle
flagged, an acknowledged update dropped, its own score inflated) and round 2 (its
manifest names another blob for an update) and the audit exits 1
with one line naming each lie (edge, round, vehicle, field, chain vs recomputed); a cloud
that publishes another global model and a higher accuracy is named too."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3
from rich.console import Console
from typer.testing import CliRunner

from bmfl.blobs.codec import blob_digest, decode_state, encode_state
from bmfl.blobs.local import LocalBlobStore
from bmfl.data import load_dataset
from bmfl.protocol.signing import receipt_message, sign
from bmfl.protocol.testset import encode_test_set
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.protocol.schemas import UploadReceipt
from browser import CHROMEDRIVER, CHROMIUM, Browser
from bmfl.task import PRESETS, AggregationSpec, AsyncSpec, TaskDraft, TaskSpec, TrainingSpec
from chain.deploy import Deployment
from chain.tasks import TasksClient
from chain.anvil import dev_key, free_port
from cloud_aggregator.app import create_app as cloud_app
from bmfl.incentives import SCALE, to_fixed
from bmfl.rounds import aggregate_cloud, refused_in_a_row, staleness_weight
from bmfl.simulation.config import StragglerConfig
from bmfl.simulation.stragglers import slowdowns
from cloud_aggregator import orchestrator
from cloud_aggregator.orchestrator import SETTLED
from cloud_aggregator.settings import CloudSettings, EdgeEndpoint
from edge_node.app import create_app as edge_app
from edge_node import rounds as edge_rounds
from edge_node.rounds import RoundEngine
from edge_node.settings import EdgeSettings
from chain import reexecute
from chain.reexecute import TOLERANCE
from launcher.cli import app
from launcher import publisher as publisher_module
from launcher.publisher import Publisher
from service_fixtures import CLOUD, OPERATOR, PUBLISHER, start_service_chain, update_blob
from service_kit.chain_access import connect
from service_kit.serve import ServerThread
from tooling import require_anvil, require_tool
from vehicle_client.fleet import Fleet
from vehicle_client.http import ServiceError
from vehicle_client.settings import FleetSettings

pytestmark = pytest.mark.slow

EDGES, VEHICLES = 3, 12
DRAFT = TaskDraft(
    rounds=2, seed=3, challenge_period_s=0,
    training=TrainingSpec(epochs=1, max_steps=2, lr=0.3, momentum=0.5, noise_multiplier=2.0),
)  # fmt: skip
INFLATED = 1_000_000


@dataclasses.dataclass
class Stack:
    rpc_url: str
    deployment: Path
    blobs: Path
    cloud_url: str
    receipts: Path
    fleet: Fleet
    publisher: Publisher
    chain_id: int

    def run_task(self, draft: TaskDraft = DRAFT) -> tuple[int, bytes]:
        """Publish a task, let the fleet train until the cloud reports it finished; the
        task id and the exact test-set bytes the publisher escrowed (and later reveals)."""
        sent: list[bytes] = []

        def keep(test) -> bytes:  # type: ignore[no-untyped-def]
            sent.append(encode_test_set(test))
            return sent[-1]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(publisher_module, "encode_test_set", keep)
            task_id = self.publisher.publish(draft, load_dataset("mnist")[1].subset(list(range(300))))["task_id"]
        stop = threading.Event()
        worker = threading.Thread(target=self.fleet.run, kwargs={"stop_event": stop, "task_ids": [task_id], "show_progress": False})
        worker.start()
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                view = httpx.get(f"{self.cloud_url}/tasks/{task_id}", timeout=30).json()
                if view["status"] == "failed" or view["detail"] == SETTLED:
                    break  # settled: the chain no longer changes under the audit
                time.sleep(1)
            assert view["status"] == "finished", view
        finally:
            stop.set()
            worker.join(120)
        return task_id, sent[0]

    def audit(self, task_id: int, test_set: str, *extra: str) -> tuple[int, str]:
        args = [
            "audit", "--task", str(task_id), "--rpc", self.rpc_url, "--deployment", str(self.deployment),
            "--store", str(self.blobs), "--cloud", self.cloud_url, "--test-set", test_set,
            "--receipts", str(self.receipts), *extra,
        ]  # fmt: skip
        result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
        return result.exit_code, result.output


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_anvil()
    root = tmp_path_factory.mktemp("reexecute")
    chain = start_service_chain(root / "deployments", edges=EDGES)
    blobs = root / "blobs"
    cloud_port, ports = free_port(), [free_port() for _ in range(EDGES)]
    cloud_url = f"http://127.0.0.1:{cloud_port}"
    servers = []
    try:
        for i, port in enumerate(ports):
            settings = EdgeSettings(
                rpc_url=chain.rpc_url, deployment=chain.deployment_file, private_key=chain.edge_keys[i], blob_store=str(blobs),
                state_dir=root / f"edge{i}", cloud_url=cloud_url, x=1000.0 * i, y=0.0,
            )  # fmt: skip
            servers.append(ServerThread(edge_app(settings), port=port).start())
        endpoints = [EdgeEndpoint(url=f"http://127.0.0.1:{p}", x=1000.0 * i, y=0.0) for i, p in enumerate(ports)]
        cloud = CloudSettings(
            rpc_url=chain.rpc_url, deployment=chain.deployment_file, private_key=dev_key(CLOUD), blob_store=str(blobs),
            state_dir=root / "cloud", edges=endpoints, round_timeout_s=120, poll_interval_s=0.2,
        )  # fmt: skip
        servers.append(ServerThread(cloud_app(cloud), port=cloud_port).start())
        receipts = root / "fleet" / "receipts.jsonl"
        fleet = Fleet(FleetSettings(
            cloud_url=cloud_url, rpc_url=chain.rpc_url, deployment=chain.deployment_file, funder_key=dev_key(OPERATOR),
            vehicles=VEHICLES, seed=4, receipts=receipts, poll_interval_s=0.2,
        ), console=Console(quiet=True))  # fmt: skip
        fleet.setup()
        publisher = Publisher(connect(chain.rpc_url, chain.deployment_file, dev_key(PUBLISHER)), cloud_url)
        yield Stack(chain.rpc_url, chain.deployment_file, blobs, cloud_url, receipts, fleet, publisher, chain.chain_id)
        fleet.close()
    finally:
        for server in reversed(servers):
            server.stop()
        chain.node.stop()


def test_an_honest_task_re_executes_clean(stack: Stack, tmp_path: Path) -> None:
    task_id, test_set = stack.run_task()
    cid = LocalBlobStore(stack.blobs).put(test_set)  # the publisher reveals the test set by CID
    code, out = stack.audit(task_id, cid, "--reexecute")  # (--test-set alone implies it)
    assert code == 0, out
    assert "audit passed" in out and "re-executed round" in out
    for section in ("verdict", "samples", "preliminary", "score", "global", "receipt", "update", "test set", "spec"):
        assert f"│ {section} " in out, section
    code, raw = stack.audit(task_id, cid, "--json")
    comparisons = json.loads(raw)["comparisons"]
    floats = [c for c in comparisons if c["tolerance"]]
    receipts = [c for c in comparisons if c["section"] == "receipt"]
    blobs = [c for c in comparisons if c["section"] == "update"]
    assert len(receipts) == len(blobs) > 0 and all(c["ok"] for c in receipts)  # the fleet kept a receipt per upload
    worst = max(abs(c["recomputed"] - c["on_chain"]) for c in floats)
    print(f"re-executed {len(floats)} floating-point results; largest difference {worst} (10⁻⁶ units)")
    assert code == 0 and len(floats) > 20 and worst <= TOLERANCE
    # a receipt no edge signed proves nothing: ignored, with a note
    forged = tmp_path / "forged.jsonl"
    outsider = Account.create()
    fake = {"task_id": task_id, "round": 1, "vehicle": 0, "digest": "0x" + "11" * 32, "cid": cid}
    message = receipt_message(stack.chain_id, task_id, 1, stack.fleet.vehicles[0].address, bytes(32 * [0x11]))
    forged.write_text(json.dumps(fake | {"signature": sign(outsider, message)}) + "\n")
    code, out = stack.audit(task_id, cid, "--receipts", str(forged))
    assert code == 0 and "note: receipt of vehicle 0 round 1 ignored: not signed by an edge" in out, out
    # a test set that is not the escrowed one is refused before anything runs
    code, out = stack.audit(task_id, LocalBlobStore(stack.blobs).put(test_set + b" "))
    assert code == 1 and "test set revealed test set matches testSetDigest" in out and "re-execution skipped" in out


def test_a_server_optimiser_re_executes_from_the_chain_alone(stack: Stack) -> None:
    """FedAdam at the cloud with a cosine schedule (its w^r is far from the plain
    average a^r, by a step that changes each round): its state is rebuilt from the
    recorded w^{r−1} and the re-executed aggregates, η_r from the round index and the
    task's planned rounds, and every global model matches the recorded one."""
    server = {"name": "fedadam", "lr": 0.05, "schedule": "cosine"}
    draft = DRAFT.model_copy(update={"rounds": 3, "aggregation": AggregationSpec(server=server)})
    task_id, test_set = stack.run_task(draft)
    cid = LocalBlobStore(stack.blobs).put(test_set)
    code, raw = stack.audit(task_id, cid, "--json")
    globals_ = [c for c in json.loads(raw)["comparisons"] if c["section"] == "global" and "global model" in c["subject"]]
    assert code == 0 and len(globals_) == 3 and all(c["ok"] for c in globals_), raw


@pytest.mark.parametrize("preset", ["private_leave_out", "private_credit"])
def test_leave_out_testing_at_the_edges_re_executes_from_the_chain_alone(stack: Stack, preset: str) -> None:
    """A task on the ``private_leave_out`` preset's aggregation (leave-out testing in place
    of self-reliability, FedAvgM at the cloud), and one on ``private_credit``'s (each kept
    upload's θ, and so its pay, scaled by the help the test set measures: an edge's θ sum
    below 1, records kept with a θ of 0): the edge services build it from the publisher's
    test set as the simulator does, and an auditor re-running every edge's filters from the
    chain gets the same verdicts, θ, aggregates and global models."""
    aggregation = AggregationSpec.model_validate(PRESETS[preset]["aggregation"])
    assert aggregation.filters[-1].name == "leave_out"
    draft = DRAFT.model_copy(update={"aggregation": aggregation})
    task_id, test_set = stack.run_task(draft)
    code, raw = stack.audit(task_id, LocalBlobStore(stack.blobs).put(test_set), "--json")
    comparisons = json.loads(raw)["comparisons"]
    verdicts = [c for c in comparisons if c["section"] == "verdict"]
    globals_ = [c for c in comparisons if c["section"] == "global" and "global model" in c["subject"]]
    assert code == 0 and verdicts and len(globals_) == 2 and all(c["ok"] for c in comparisons), raw
    thetas: dict[str, int] = {}
    for c in verdicts:
        if c["subject"].endswith(" θ"):
            edge_round = c["subject"].split(" vehicle ")[0]
            thetas[edge_round] = thetas.get(edge_round, 0) + c["on_chain"]
    full = [total >= SCALE - len(thetas) for total in thetas.values()]  # each record rounds θ to 10⁻⁶ once
    assert all(full) if preset == "private_leave_out" else not all(full)  # credit: some edge-rounds weigh less than 1


def test_standings_live_on_chain_follow_a_handover_and_an_inflated_one_is_named_for_its_round(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """The default aggregation keeps each vehicle's standing in the task as the records' Λ
    (docs/algorithms.md §8.10). One edge records an honest vehicle's standing in round 1
    as 6, over the limit of 5. Before round 2 the vehicle hands over to another edge (a
    barred attacker would, to start afresh): that edge, reading the chain, bars it before
    its filters run, θ = 0, and records its standing less the drift (5.5). The audit re-derives every standing from
    the chain and names exactly the inflated Λ; round 2, which only followed the chain,
    re-executes clean, and so does every other record."""
    assert DRAFT.aggregation.standing is not None
    liar, inflated = 1, -6 * SCALE
    aggregate, assignment = RoundEngine._aggregate, Fleet._assignment
    victim: dict[str, int] = {}

    def inflating(self, spec, round_, global_cid, updates):  # type: ignore[no-untyped-def]
        prelim = aggregate(self, spec, round_, global_cid, updates)
        if self.node.index != liar or round_ != 1:
            return prelim
        records = list(prelim.records)
        victim["vehicle"] = records[0].vehicle
        records[0] = records[0].model_copy(update={"reliability": inflated})
        return dataclasses.replace(prelim, records=records)

    def handing_over(self, vehicle, task_id):  # type: ignore[no-untyped-def]
        """The victim drives to the next edge once the liar has recorded its round 1 (before
        its turn in round 2, whether or not round 2 is open yet)."""
        if vehicle.index == victim.get("vehicle") and "edge" not in victim:
            new = next(e for e in self.edges if e.index == liar + 1)
            self._associate(vehicle, new, self.edge_of(vehicle))
            victim["edge"] = new.index
        return assignment(self, vehicle, task_id)

    monkeypatch.setattr(RoundEngine, "_aggregate", inflating)
    monkeypatch.setattr(Fleet, "_assignment", handing_over)
    try:
        task_id, test_set = stack.run_task()
    finally:  # the module's later tests find the fleet where it was
        moved = next((v for v in stack.fleet.vehicles if v.index == victim.get("vehicle")), None)
        if moved is not None and "edge" in victim:
            stack.fleet._associate(moved, next(e for e in stack.fleet.edges if e.index == liar), stack.fleet.edge_of(moved))
    w3 = Web3(Web3.HTTPProvider(stack.rpc_url))
    deployment = Deployment.model_validate_json(stack.deployment.read_text())
    recorded = TasksClient(w3, deployment.tasks).recorded_rounds(task_id, deployment.block_number)
    (barred,) = [(r.edge, rec) for r in recorded if r.round == 2 for rec in r.decoded() if rec.vehicle == victim["vehicle"]]
    assert barred[0] == victim["edge"] == liar + 1  # recorded where it went
    assert barred[1].malicious and barred[1].theta == 0  # barred, its standing carried, less the drift for the round served
    assert barred[1].reliability == inflated + SCALE // 2
    honest = [rec for r in recorded for rec in r.decoded() if rec.vehicle != victim["vehicle"]]
    assert honest and all(rec.reliability <= 0 for rec in honest)  # Λ = −S ≤ 0
    code, raw = stack.audit(task_id, LocalBlobStore(stack.blobs).put(test_set), "--json")
    wrong = [c for c in json.loads(raw)["comparisons"] if not c["ok"]]
    assert code == 1 and [(c["subject"], c["on_chain"]) for c in wrong] == [
        (f"round 1 edge {liar} vehicle {victim['vehicle']} Λ", inflated)], wrong


def test_the_ratchet_refuses_a_poisoned_round_and_the_audit_agrees(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every edge records a poisoned preliminary model in round 2 (w¹'s output layer
    negated: its predictions become the least likely digit). With the cloud's rollback
    guard (tolerance 0) the round's global model falls below w¹ on the test set, so the
    cloud records w¹ again; the re-execution names each edge's
    poisoned preliminary model and re-derives the refusal from the chain alone: the global
    models and accuracies it recomputes are the recorded ones. In round 3 every edge's
    leave-out testing reads from the chain that the round before was refused (and judges
    at the escalated step, docs/algorithms.md §8.9); the audit's re-execution gives its
    edge rules the same count (on this small stack round 3's verdicts are the same at
    either step, so the count itself is compared)."""
    aggregate = RoundEngine._aggregate
    poisoned: list[int] = []
    judged: dict[str, set[tuple[int, int]]] = {"edges": set(), "audit": set()}  # (round, refusals its rule was given)

    def watch(module, reader: str) -> None:  # type: ignore[no-untyped-def]
        """Record, for each edge rule ``module`` builds, the round it reads the chain up to
        and the refused rounds in a row its leave-out testing is given."""
        read: list[int] = []
        build = module.task_edge_rule

        def count(starts):  # type: ignore[no-untyped-def]
            read.append(len(starts))
            return refused_in_a_row(starts)

        def rule(*args, refusals, **kwargs):  # type: ignore[no-untyped-def]
            judged[reader].add((read[-1], refusals(read[-1])))
            return build(*args, refusals=refusals, **kwargs)

        monkeypatch.setattr(module, "refused_in_a_row", count)
        monkeypatch.setattr(module, "task_edge_rule", rule)

    def poisoning(self, spec, round_, global_cid, updates):  # type: ignore[no-untyped-def]
        prelim = aggregate(self, spec, round_, global_cid, updates)
        if round_ != 2 or not prelim.cid:
            return prelim
        state, meta = decode_state(self.node.store.get(global_cid), spec.model)
        state["fc2.weight"], state["fc2.bias"] = -state["fc2.weight"], -state["fc2.bias"]
        blob = encode_state(state, meta)
        poisoned.append(self.node.index)
        return dataclasses.replace(prelim, cid=self.node.store.put(blob, pin=True), digest=blob_digest(blob).raw)

    monkeypatch.setattr(RoundEngine, "_aggregate", poisoning)
    watch(edge_rounds, "edges")
    watch(reexecute, "audit")
    draft = DRAFT.model_copy(update={"rounds": 3, "aggregation": AggregationSpec(ratchet=0.0)})
    task_id, test_set = stack.run_task(draft)
    deployment = Deployment.model_validate_json(stack.deployment.read_text())
    tasks = TasksClient(Web3(Web3.HTTPProvider(stack.rpc_url)), deployment.tasks)
    finalized = {ev.round: ev for ev in tasks.events("RoundFinalized", deployment.block_number, taskId=task_id)}
    assert sorted(poisoned) == list(range(EDGES))
    assert finalized[2].globalCid == finalized[1].globalCid and finalized[2].accuracy == finalized[1].accuracy
    assert judged["edges"] == {(1, 0), (2, 0), (3, 1)}  # every edge read round 2's refusal from the chain in round 3
    rounds = [httpx.get(f"{stack.cloud_url}/tasks/{task_id}/rounds/{r}").json() for r in (1, 2, 3)]
    assert [r["rolled_back_to"] for r in rounds[:2]] == [None, 1] and rounds[1]["global_cid"] == finalized[1].globalCid
    summaries = httpx.get(f"{stack.cloud_url}/tasks/{task_id}").json()["rounds"]
    assert [r["rolled_back_to"] for r in summaries] == [r["rolled_back_to"] for r in rounds]
    require_tool("chromium", bool(CHROMIUM and CHROMEDRIVER), "apt-get install chromium chromium-driver (make setup)")
    with Browser() as browser:  # the task page says which round was refused and whose model stands
        browser.open(f"{stack.cloud_url}/ui/tasks/{task_id}")
        browser.wait_for('#rounds tr[data-round="2"] [data-refused="1"]')
        assert browser.count("#rounds [data-refused]") == sum(r["rolled_back_to"] is not None for r in rounds)
    cid = LocalBlobStore(stack.blobs).put(test_set)
    code, out = stack.audit(task_id, cid, "--reexecute")
    mismatches = [line.removeprefix("MISMATCH ") for line in out.splitlines() if line.startswith("MISMATCH")]
    assert code == 1 and len(mismatches) == EDGES, out
    assert all(line.startswith("preliminary round 2 edge ") for line in mismatches), mismatches
    assert judged["audit"] == judged["edges"]  # the re-execution judged each round as the edges did
    code, raw = stack.audit(task_id, cid, "--json")
    globals_ = [c for c in json.loads(raw)["comparisons"] if c["section"] == "global" and c["subject"].startswith("round 2 ")]
    assert [c["subject"].split(" (")[0] for c in globals_] == ["round 2 global model largest coordinate difference", "round 2 accuracy"]
    assert all(c["ok"] for c in globals_), globals_


def test_a_lying_edge_is_named_for_each_lie(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    by_edge: dict[int, list[int]] = {}
    for v in stack.fleet.vehicles:
        by_edge.setdefault(stack.fleet.edge_of(v).index, []).append(v.index)
    liar = max(by_edge, key=lambda e: len(by_edge[e]))
    assert len(by_edge[liar]) >= 3
    lies: dict[str, int] = {}
    aggregate, score = RoundEngine._aggregate, RoundEngine._score

    def lying_aggregate(self, spec, round_, global_cid, updates):  # type: ignore[no-untyped-def]
        if self.node.index != liar:
            return aggregate(self, spec, round_, global_cid, updates)
        if round_ == 2:  # the manifest names another vehicle's blob for one update
            prelim = aggregate(self, spec, round_, global_cid, updates)
            manifest = json.loads(self.node.store.get(prelim.manifest_cid))
            first, second = manifest["updates"][:2]
            lies["swapped"], first["cid"] = first["vehicle"], second["cid"]
            return dataclasses.replace(prelim, manifest_cid=self.node.store.put(json.dumps(manifest).encode(), pin=True))
        lies["dropped"] = max(u.vehicle for u in updates)  # acknowledged, then left out of records and manifest
        prelim = aggregate(self, spec, round_, global_cid, [u for u in updates if u.vehicle != lies["dropped"]])
        records = list(prelim.records)
        lies["theta"], lies["flagged"] = records[0].vehicle, records[1].vehicle
        assert not records[1].malicious
        records[0] = records[0].model_copy(update={"theta": records[0].theta + 250_000})
        records[1] = records[1].model_copy(update={"theta": 0, "malicious": True})
        return dataclasses.replace(prelim, records=records)

    def lying_score(self, task, round_, req, recorded_edges):  # type: ignore[no-untyped-def]
        scores = score(self, task, round_, req, recorded_edges)
        if self.node.index == liar and round_ == 1:
            scores[liar] = INFLATED
        return scores

    monkeypatch.setattr(RoundEngine, "_aggregate", lying_aggregate)
    monkeypatch.setattr(RoundEngine, "_score", lying_score)
    task_id, test_set = stack.run_task()
    revealed = tmp_path / "test_set.safetensors"
    revealed.write_bytes(test_set)  # revealed as a file this time, the spec from the publisher's file
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(httpx.get(f"{stack.cloud_url}/tasks/{task_id}").json()["spec"]))
    code, out = stack.audit(task_id, str(revealed), "--spec", str(spec), "--cloud", "http://127.0.0.1:9")
    assert code == 1 and "audit FAILED" in out, out
    mismatches = [line.removeprefix("MISMATCH ") for line in out.splitlines() if line.startswith("MISMATCH")]
    where = f"round 1 edge {liar}"
    expected = {
        "θ": f"verdict {where} vehicle {lies['theta']} θ: on chain ",
        "flag": f"verdict {where} vehicle {lies['flagged']} flagged: on chain 1, recomputed 0",
        "drop": f"receipt {where} vehicle {lies['dropped']} acknowledged update 0x",
        "score": f"score {where} scored edge {liar}: on chain {INFLATED}, recomputed ",
    }
    for lie, prefix in expected.items():
        assert any(line.startswith(prefix) for line in mismatches), (lie, prefix, mismatches)
    assert any(line.endswith(": not recorded") for line in mismatches if line.startswith("receipt"))
    swapped = f"update round 2 edge {liar} vehicle {lies['swapped']} blob: on chain 0, recomputed 1: blob "
    assert any(line.startswith(swapped) and "has sha2-256" in line for line in mismatches), (swapped, mismatches)
    assert f"note: round 2 edge {liar}: not re-executed (an update blob is missing)" in out
    # nothing else is blamed: every mismatch is one of the lies
    allowed = (*expected.values(), f"verdict {where} vehicle {lies['flagged']} θ: on chain 0, recomputed ", swapped)
    assert all(line.startswith(allowed) for line in mismatches), mismatches


def test_a_lying_cloud_is_named(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def shifted(rule, preliminaries, samples, reference, round_index, server):  # type: ignore[no-untyped-def]
        outcome = aggregate_cloud(rule, preliminaries, samples, reference, round_index, server)
        return dataclasses.replace(outcome, model=outcome.model + 0.01) if outcome and round_index == 1 else outcome

    monkeypatch.setattr(orchestrator, "aggregate_cloud", shifted)  # round 1: another global model
    monkeypatch.setattr(orchestrator, "to_fixed", lambda accuracy: to_fixed(accuracy) + 50_000)  # every round
    task_id, test_set = stack.run_task()
    revealed = tmp_path / "test_set.safetensors"
    revealed.write_bytes(test_set)
    code, out = stack.audit(task_id, str(revealed))
    assert code == 1, out
    mismatches = [line.removeprefix("MISMATCH ") for line in out.splitlines() if line.startswith("MISMATCH")]
    assert any(line.startswith("global round 1 global model largest coordinate difference") and "up to 0.01 " in line
               for line in mismatches), mismatches  # fmt: skip
    accuracy = [line for line in mismatches if line.startswith("global round")]
    assert [line.split(":")[0] for line in accuracy if "accuracy" in line] == ["global round 1 accuracy", "global round 2 accuracy"]
    assert all(line.startswith("global round") for line in mismatches), mismatches  # the edges are not blamed


# ---------------------------------------------------------------- asynchronous task

ASYNC_DRAFT = DRAFT.model_copy(update={
    "rounds": 3, "category": 3,  # the fleet (category 1) and two slow vehicles (category 2), kept out of the other tasks
    "asynchrony": AsyncSpec(mode="async", buffer_size=VEHICLES + 1, timeout_s=15, tau_max=1),
})  # fmt: skip


def slow_vehicles(stack: Stack, known: int, out: dict[str, object], seed: int) -> None:
    """Two vehicles outside the fleet, selected in version 1: ``slow`` trains from version 1
    and uploads once version 2 is open (τ = 1, accepted, its receipt names round 2);
    ``late`` uploads its version-1 update once version 3 is open (τ = 2 > τ_max: 409 ``stale``)."""
    fleet = Fleet(FleetSettings(
        cloud_url=stack.cloud_url, rpc_url=stack.rpc_url, deployment=stack.deployment, funder_key=dev_key(OPERATOR),
        vehicles=2, seed=seed, categories=2,
    ), console=Console(quiet=True))  # fmt: skip
    fleet.setup()
    out["ready"] = True
    try:
        while not (tasks := [t for t in httpx.get(f"{stack.cloud_url}/tasks").json() if t["task_id"] > known]):
            time.sleep(0.2)
        task_id = tasks[0]["task_id"]
        spec = TaskSpec.model_validate(httpx.get(f"{stack.cloud_url}/tasks/{task_id}").json()["spec"])
        blobs = {}
        for name, vehicle in zip(("slow", "late"), fleet.vehicles):
            a = wait_open(vehicle, fleet, task_id, 1)
            out[f"{name}_selected"] = a.selected
            blobs[name] = update_blob(GatewayClient(fleet.edge_of(vehicle).url).fetch(str(a.global_cid)), spec, 1, vehicle)
        for name, version in (("slow", 2), ("late", 3)):
            vehicle = fleet.vehicles[0 if name == "slow" else 1]
            wait_open(vehicle, fleet, task_id, version)
            edge = fleet.edge_of(vehicle)
            try:
                out[name] = vehicle.upload(edge.url, edge.address, task_id, 1, blobs[name])
            except ServiceError as exc:
                out[name] = exc
        out["indices"] = [v.index for v in fleet.vehicles]
    finally:
        fleet.close()


def wait_open(vehicle, fleet: Fleet, task_id: int, version: int):  # type: ignore[no-untyped-def]
    """The vehicle's assignment once ``version`` (or a later one) is open at its edge."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            a = vehicle.poll(fleet.edge_of(vehicle).url, task_id)
            if a.open and a.round >= version:
                return a
        except ServiceError:
            pass  # the edge has not got the task yet
        time.sleep(0.2)
    raise TimeoutError(f"version {version} never opened")


def run_async(stack: Stack, seed: int) -> tuple[int, bytes, dict[str, object]]:
    """:data:`ASYNC_DRAFT` run by the fleet with :func:`slow_vehicles` (keys from ``seed``) beside it."""
    known = max([t["task_id"] for t in httpx.get(f"{stack.cloud_url}/tasks").json()], default=0)
    out: dict[str, object] = {}
    helper = threading.Thread(target=slow_vehicles, args=(stack, known, out, seed))
    helper.start()
    while "ready" not in out and helper.is_alive():
        time.sleep(0.2)
    try:
        task_id, test_set = stack.run_task(ASYNC_DRAFT)
    finally:
        helper.join(300)
    return task_id, test_set, out


def test_an_asynchronous_task_finishes_pays_and_re_executes_clean(stack: Stack) -> None:
    """An async task (τ_max = 1, S = fleet + 1, timeout 15 s) through the real services: the
    cloud advances without the slow vehicles, a version-1 report enters version 2 with
    τ = 1 and θ·s(1), one 2 versions old is refused; the task finishes, pays the slow
    vehicle, and the re-executed audit (which recomputes θ·s(τ) from the chain's τ) passes."""
    task_id, test_set, out = run_async(stack, seed=77)
    assert out["slow_selected"] and out["late_selected"]
    assert isinstance(out["slow"], UploadReceipt) and out["slow"].round == 2, out["slow"]
    assert isinstance(out["late"], ServiceError) and (out["late"].status, out["late"].reason) == (409, "stale")
    w3 = Web3(Web3.HTTPProvider(stack.rpc_url))
    deployment = Deployment.model_validate_json(stack.deployment.read_text())
    tasks = TasksClient(w3, deployment.tasks)
    assert tasks.task(task_id).tau_max == 1
    slow, late = out["indices"]  # type: ignore[misc]
    records = [(r.round, rec) for r in tasks.recorded_rounds(task_id, deployment.block_number) for rec in r.decoded()]
    assert [(r, rec.staleness) for r, rec in records if rec.vehicle == slow] == [(2, 1)]
    assert all(rec.staleness == 0 for _, rec in records if rec.vehicle != slow) and late not in {rec.vehicle for _, rec in records}
    payees = {ev.vehicle for ev in tasks.events("PayoutCredited", deployment.block_number, taskId=task_id)}  # type: ignore[attr-defined]
    stale_theta = next(rec.theta for _, rec in records if rec.vehicle == slow)
    assert (slow in payees) == (stale_theta > 0)
    cid = LocalBlobStore(stack.blobs).put(test_set)
    code, raw = stack.audit(task_id, cid, "--reexecute", "--json")
    assert code == 0, raw
    weighted = [c for c in json.loads(raw)["comparisons"] if f"vehicle {slow} θ·s(τ = 1)" in c["subject"]]
    assert len(weighted) == 1 and weighted[0]["ok"] and weighted[0]["on_chain"] == stale_theta


def test_an_edge_that_does_not_discount_a_stale_report_is_named(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge records the stale report with its right τ (the signature forces it) but θ
    without the staleness weight s(τ), to pay its vehicle more: the re-execution names it."""
    aggregate = RoundEngine._aggregate

    def undiscounted(self, spec, round_, global_cid, updates):  # type: ignore[no-untyped-def]
        prelim = aggregate(self, spec, round_, global_cid, updates)
        weight = staleness_weight(1, spec.asynchrony)
        records = [r.model_copy(update={"theta": round(r.theta / weight)}) if r.staleness == 1 else r for r in prelim.records]
        return dataclasses.replace(prelim, records=records)

    monkeypatch.setattr(RoundEngine, "_aggregate", undiscounted)
    task_id, test_set, out = run_async(stack, seed=78)
    slow = out["indices"][0]  # type: ignore[index]
    cid = LocalBlobStore(stack.blobs).put(test_set)
    code, output = stack.audit(task_id, cid, "--reexecute")
    mismatches = [line.removeprefix("MISMATCH ") for line in output.splitlines() if line.startswith("MISMATCH")]
    assert code == 1 and len(mismatches) == 1, output
    assert mismatches[0].startswith("verdict round 2 edge ") and f"vehicle {slow} θ·s(τ = 1): on chain " in mismatches[0]


def test_a_fleet_with_stragglers_is_not_waited_for(stack: Stack) -> None:
    """A fleet whose slow vehicles take 5× as long (``FleetSettings.stragglers``, the
    simulator's compute model) in an async task (S = the fast vehicles): the cloud
    advances on the fast reports, each slow vehicle's report is recorded in a later version
    with τ ≥ 1 (held, then sent again while no version is open, never refused as stale),
    and the fleet loses no upload but those still on their way when the task ended."""
    stragglers = StragglerConfig(kind="slow_fraction", slow_fraction=0.4, slowdown=5.0, seconds_per_sample=1 / 128)
    fleet = Fleet(FleetSettings(
        cloud_url=stack.cloud_url, rpc_url=stack.rpc_url, deployment=stack.deployment, funder_key=dev_key(OPERATOR),
        vehicles=5, seed=91, categories=4, stragglers=stragglers, poll_interval_s=0.2,
    ), console=Console(quiet=True))  # fmt: skip
    fleet.setup()
    draft = DRAFT.model_copy(update={  # 2 steps of B = 64: 128 samples, 1 s per job (5 s for a slow vehicle)
        "rounds": 4, "category": 4, "asynchrony": AsyncSpec(mode="async", buffer_size=3, tau_max=3),
    })  # fmt: skip
    try:
        task_id = stack.publisher.publish(draft, load_dataset("mnist")[1].subset(list(range(300))))["task_id"]
        report = fleet.run(task_ids=[task_id], show_progress=False)
        records = [rec for r in TasksClient(Web3(Web3.HTTPProvider(stack.rpc_url)), Deployment.model_validate_json(
            stack.deployment.read_text()).tasks).recorded_rounds(task_id) for rec in r.decoded()]  # fmt: skip
        slow = {v.index for v, factor in zip(fleet.vehicles, slowdowns(stragglers, 5, 91)) if factor > 1}
    finally:
        fleet.close()
    assert len(slow) == 2
    assert {rec.vehicle for rec in records if rec.staleness > 0} >= slow, records  # each slow vehicle's first report
    assert sum(rec.vehicle not in slow for rec in records) > sum(rec.vehicle in slow for rec in records)
    assert set(report.failures) <= {"task_over"}, report
