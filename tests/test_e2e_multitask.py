"""A multi-task task (FedAuxHMTL's ``mtl_cnn1d`` on synthetic traffic flows with
auxiliary targets) end to end on the real stack: Anvil, 3 edge servers and the cloud as
processes (launcher.stack), 6 vehicles over HTTP, published from the publisher's key;
the edges filter and aggregate it and the cloud finishes it. The cloud's per-round
traffic record is then checked against the blob store: every figure is the sum of the
sizes of the blobs actually moved."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from bmfl.blobs.local import LocalBlobStore
from bmfl.data import load_dataset
from bmfl.protocol.schemas import TaskDraft, TrainingSpec
from chain.anvil import dev_key
from chain.deploy import Deployment
from chain.tasks import TasksClient
from launcher.stack import OPERATOR, LocalStack, run_task
from tooling import requires_anvil
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

pytestmark = [pytest.mark.slow, requires_anvil]

ROUNDS = 2


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(run_dir, edges=3, round_timeout_s=120) as stack:
        train, test = load_dataset("flows_synthetic", num_flows=1500)
        fleet = Fleet(
            FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=6, seed=5, partition="iid",
            ),
            train_data=train,
        )  # fmt: skip
        fleet.setup()
        draft = TaskDraft(
            model="mtl_cnn1d", rounds=ROUNDS, reward_wei=10**18, block_reward_wei=10**16,
            training=TrainingSpec(epochs=1, batch_size=16, lr=0.05), challenge_period_s=2,
        )  # fmt: skip
        task_id, view = run_task(stack, fleet, draft, test.subset(list(range(200))))
        records = [httpx.get(f"{stack.cloud.url}/tasks/{task_id}/rounds/{r}").json() for r in range(1, ROUNDS + 1)]
        deployment = Deployment.model_validate_json(Path(stack.deployment_file).read_text())
        chain = TasksClient(Web3(Web3.HTTPProvider(stack.rpc_url)), deployment.tasks)
        mined = chain.recorded_rounds(task_id, deployment.block_number)
        yield stack, fleet, view, records, mined, LocalBlobStore(stack.blob_store)
        fleet.close()


def test_multitask_task_finishes_with_every_vehicle_aggregated(finished) -> None:
    stack, fleet, view, records, _, _ = finished
    assert view["status"] == "finished", view["detail"] + stack.cloud.tail()
    assert view["rounds_finished"] == ROUNDS and all(0.0 <= a <= 1.0 for a in view["accuracy"])
    for record in records:
        assert len(record["trainers"]) == 6 and record["flagged"] == []
        assert record["leader"] is not None  # three edges scored each other's multi-task preliminaries


def test_traffic_record_equals_the_blobs_in_the_store(finished) -> None:
    _, fleet, view, records, mined, store = finished
    moved = [sum(p["up"] for p in [*r["traffic"]["vehicles"].values(), *r["traffic"]["edges"].values(), r["traffic"]["cloud"]])
             for r in records]  # fmt: skip
    assert [r["bytes_moved"] for r in view["rounds"]] == moved and view["bytes_moved"] == sum(moved) > 0
    for r, record in enumerate(records, 1):
        traffic = record["traffic"]
        mine = [ev for ev in mined if ev.round == r and ev.preliminary_cid]
        manifests = [json.loads(store.get(ev.manifest_cid)) for ev in mine]
        upload = {u["address"]: store.stat(u["cid"]).size for m in manifests for u in m["updates"]}
        prelim = {ev.edge: store.stat(ev.preliminary_cid).size for ev in mine}
        reference = store.stat(manifests[0]["global_cid"]).size
        new_global = store.stat(record["global_cid"]).size
        assert {a: t["up"] for a, t in traffic["vehicles"].items()} == upload
        assert all(t["down"] == reference for t in traffic["vehicles"].values())
        for e, t in traffic["edges"].items():
            others = sum(size for o, size in prelim.items() if o != int(e))
            received = sum(upload[u["address"]] for m in manifests if m["edge"] == int(e) for u in m["updates"])
            assert t["up"] == prelim[int(e)] * len(prelim)  # to the cloud and to the other scorers
            assert t["down"] == received + reference + others + new_global
        assert traffic["cloud"]["down"] == sum(prelim.values())
        assert traffic["cloud"]["up"] == reference * (len(upload) + len(prelim)) + new_global * len(prelim)
