"""Parity of the round core across transports: one task and seed run through the real
stack on loopback (Anvil, 2 edge servers and the cloud as uvicorn processes, 8 vehicles
over HTTP, one sign-flip attacker) and in-process (``bmfl simulate`` with the
deployment's associations and the noisy sample counts its vehicles registered) select
the same trainers, give every upload the same verdict, θ and Λ, elect the same leaders
and reach the same w^r (to 1e-6) in each of 3 rounds.

Vehicles draw batches and DP noise from a secret source (``bmfl.privacy.SecureGenerator``)
that no simulation can replay, so parity is checked on training whose result does not
depend on it: full-batch gradient descent (B ≥ n, so Poisson sampling keeps every sample)
without DP, under an explicitly unlimited budget. DP training is the same core path
(``bmfl.training.fleet_uploads``); test_privacy_edge.py checks its noise."""

from __future__ import annotations

import math
import threading

import httpx
import pytest
import torch
from rich.console import Console
from web3 import Web3

from bmfl.blobs.codec import BlobMeta, decode_state, encode_state
from bmfl.blobs.local import LocalBlobStore
from bmfl.data import load_dataset
from bmfl.incentives import SCALE, to_fixed
from bmfl.params import flatten
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.runner import SIMULATED_TASK_ID, edge_test_set, initial_model
from bmfl.task import AggregationSpec, RuleSpec, TaskDraft, TrainingSpec
from chain.anvil import dev_key, find_anvil
from chain.deploy import Deployment
from chain.tasks import TasksClient
from chain.records import fixed_reliability
from launcher.publisher import Publisher
from launcher.stack import OPERATOR, PUBLISHER, LocalStack
from service_kit.chain_access import connect
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_anvil() is None, reason="missing tool: anvil (npm ci)")]

SEED, VEHICLES, EDGES, ROUNDS = 5, 8, 3, 3  # three edges: a consensus quorum
DRAFT = TaskDraft(
    rounds=ROUNDS, fraction=0.75, seed=SEED,
    training=TrainingSpec(epochs=1, max_steps=2, lr=0.3, momentum=0.5, dp=False, batch_size=4096),
    # the paper's pipeline. Tolerance 3 sits between the honest and the attacking scores on this trajectory: in-process
    # runs with the deployment's edges and 10 draws of the registered counts' noise (n + N(0, 20²), fresh each run)
    # flagged the attacker in round 3 of every draw and no honest vehicle; at tolerance 1 honest vehicle 0 fell
    # 1–2 points short in round 3 of 2 draws of 5, at tolerance 5 the attacker was still flagged in every draw
    aggregation=AggregationSpec(edge=RuleSpec(name="reweight"), filters=[RuleSpec(name="self_reliability", options={"tolerance": 3.0})]),
)  # fmt: skip
ATTACK = {"name": "sign_flip", "fraction": 1 / VEHICLES}


def _simulation(edge_of: list[int], counts: list[int]) -> SimulationConfig:
    return SimulationConfig.model_validate({
        **DRAFT.model_dump(), "name": "parity", "vehicles": VEHICLES, "edges": EDGES, "sample_counts": counts,
        "data": {"name": "mnist", "edge_test_samples": 300}, "partition": {"kind": "dirichlet", "options": {"alpha": 0.9}},
        "attack": ATTACK, "assignment": {"kind": "given", "edge_of": edge_of},
    })  # fmt: skip


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("parity")
    with LocalStack(run_dir, edges=EDGES, round_timeout_s=180) as stack:
        fleet = Fleet(FleetSettings(
            cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
            funder_key=dev_key(OPERATOR), vehicles=VEHICLES, seed=SEED, dataset="mnist", partition="dirichlet",
            alpha=0.9, attack=ATTACK["name"], attack_fraction=ATTACK["fraction"], epsilon_budget=math.inf,
        ), console=Console(quiet=True))  # fmt: skip
        fleet.setup()
        assert [v.index for v in fleet.vehicles] == list(range(VEHICLES))  # registry index = simulated vehicle id
        edge_of = [fleet.edge_of(v).index for v in fleet.vehicles]
        config = _simulation(edge_of, [v.registered_samples for v in fleet.vehicles])
        test = load_dataset("mnist")[1]
        publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
        w0 = encode_state(initial_model(config).state_dict(), BlobMeta("initial", 0, publisher.chain.address, DRAFT.model))
        task_id = publisher.publish(DRAFT, edge_test_set(test, config), w0)["task_id"]
        assert task_id == SIMULATED_TASK_ID
        stop = threading.Event()
        worker = threading.Thread(target=fleet.run, kwargs={"stop_event": stop, "task_ids": [task_id], "show_progress": False})
        worker.start()
        worker.join(900)
        stop.set()
        view = httpx.get(f"{stack.cloud.url}/tasks/{task_id}").json()
        assert view["status"] == "finished", view.get("detail", "") + stack.cloud.tail()
        deployment = Deployment.model_validate_json(stack.deployment_file.read_text())
        tasks = TasksClient(Web3(Web3.HTTPProvider(stack.rpc_url)), deployment.tasks)
        chain = {name: tasks.events(name, deployment.block_number, taskId=task_id) for name in ("LeaderElected", "RoundFinalized")}
        chain["RoundRecorded"] = tasks.recorded_rounds(task_id, deployment.block_number)
        store = LocalBlobStore(stack.blob_store)
        models = {ev.round: flatten(decode_state(store.get(ev.globalCid), DRAFT.model)[0]) for ev in chain["RoundFinalized"]}
        fleet.close()
    simulated = run_simulation(config, Console(quiet=True), keep_models=True)
    yield chain, models, simulated, fleet


def test_the_same_trainers_are_selected(both) -> None:
    chain, _, simulated, _ = both
    on_chain: dict[int, dict[int, list[int]]] = {}
    for ev in chain["RoundRecorded"]:  # every selected vehicle uploads here
        on_chain.setdefault(ev.round, {}).setdefault(ev.edge, []).extend(r.vehicle for r in ev.decoded())
    assert {r: {e: sorted(v) for e, v in per.items()} for r, per in on_chain.items()} == {
        r: per for r, per in enumerate(simulated.selected, start=1)
    }
    assert all(len(v) < VEHICLES for per in simulated.selected for v in per.values())  # V < 1: a real draw


def test_every_upload_gets_the_same_verdict_theta_and_reliability(both) -> None:
    chain, _, simulated, fleet = both
    (attacker,) = fleet.attackers
    caught = 0
    for ev in chain["RoundRecorded"]:
        expected = simulated.verdicts[ev.round - 1][ev.edge]
        records = {rec.vehicle: rec for rec in ev.decoded()}
        assert sorted(records) == sorted(expected)
        for vehicle, rec in records.items():
            verdict = expected[vehicle]
            assert rec.malicious == verdict.flagged, (ev.round, vehicle)
            assert abs(rec.theta - to_fixed(verdict.theta)) <= 1  # θ to 1e-6
            assert abs(rec.reliability - fixed_reliability(verdict.reliability)) <= 1
            assert rec.malicious <= (vehicle == attacker.index), (ev.round, vehicle)  # no honest vehicle flagged
            caught += rec.malicious
    assert caught >= 1 and len(chain["RoundRecorded"]) == EDGES * ROUNDS


def test_the_same_leaders_are_elected(both) -> None:
    chain, _, simulated, _ = both
    assert [ev.leader for ev in sorted(chain["LeaderElected"], key=lambda ev: ev.round)] == simulated.leaders
    medians = {ev.round: [m / SCALE for m in ev.medians] for ev in chain["LeaderElected"]}
    assert [medians[r.round] for r in simulated.rounds] == [r.edge_accuracies for r in simulated.rounds]


def test_the_global_models_agree_to_1e_6(both) -> None:
    _, models, simulated, _ = both
    assert sorted(models) == list(range(1, ROUNDS + 1)) and len(simulated.models) == ROUNDS
    for r, model in enumerate(simulated.models, start=1):
        assert float((models[r] - model).abs().max()) <= 1e-6, r
        assert not torch.equal(models[r], simulated.models[r - 2] if r > 1 else models[r] * 0)  # the model moved
