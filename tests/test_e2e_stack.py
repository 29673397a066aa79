"""End to end across real processes: Anvil, 2 edge servers and the cloud as uvicorn
processes on 127.0.0.1 (launcher.stack), 8 vehicles (one same-value attacker)
driven by the fleet over HTTP, a task published from the publisher's key, 2 rounds,
then the chain is read back: the attacker is flagged, every wei of the escrow is
accounted for, and the auditor (``bmfl audit``) passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from bmfl.blobs.gateway_client import GatewayClient
from bmfl.data import load_dataset
from bmfl.privacy import COUNT_NOISE
from bmfl.protocol.schemas import TaskDraft, TrainingSpec
from launcher.stack import OPERATOR, LocalStack, run_task
from chain.anvil import dev_key
from chain.audit import Auditor
from chain.deploy import Deployment
from chain.tasks import TasksClient
from cloud_aggregator.orchestrator import SETTLED
from tooling import requires_anvil
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

pytestmark = [pytest.mark.slow, requires_anvil]

ESCROW = 10**18
BLOCK_REWARD = 10**16
TARGET = 6.0  # ε at δ = 1e-5 over the task, under the vehicles' default budget of 10


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(run_dir, edges=3, round_timeout_s=120) as stack:
        train, test = load_dataset("mnist")
        fleet = Fleet(
            FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=8, seed=3, attack="same_value", attack_fraction=0.125,
                report_epsilon=True,
            ),
            train_data=train.subset(list(range(2400))),
        )  # fmt: skip
        fleet.setup()
        # σ from a target ε, planned for the fleet's smallest vehicle (the publisher calibrates)
        training = TrainingSpec(epochs=1, target_epsilon=TARGET, plan_samples=min(len(v.data) for v in fleet.vehicles))
        draft = TaskDraft(rounds=2, reward_wei=ESCROW, block_reward_wei=BLOCK_REWARD, training=training, challenge_period_s=2)
        task_id, view = run_task(stack, fleet, draft, test.subset(list(range(500))))
        deployment = Deployment.model_validate_json(Path(stack.deployment_file).read_text())
        view["draft"] = draft
        yield stack, fleet, task_id, view, Web3(Web3.HTTPProvider(stack.rpc_url)), deployment
        fleet.close()


def test_task_finishes_with_the_attacker_flagged_on_chain(finished) -> None:
    stack, fleet, task_id, view, w3, deployment = finished
    assert view["status"] == "finished", view["detail"] + stack.cloud.tail()
    assert view["rounds_finished"] == 2 and len(view["accuracy"]) == 2
    tasks = TasksClient(w3, deployment.tasks)
    (attacker,) = fleet.attackers
    records = [(r.round, rec) for r in tasks.recorded_rounds(task_id, deployment.block_number) for rec in r.decoded()]
    by_vehicle: dict[int, list[bool]] = {}
    for _, rec in records:
        by_vehicle.setdefault(rec.vehicle, []).append(rec.malicious)
    assert by_vehicle[attacker.index] == [True, True] and len(by_vehicle) == 8
    # leave-out testing flags under 1 % of honest uploads (docs/algorithms.md §8.7); 14 honest uploads here
    assert sum(sum(flags) for v, flags in by_vehicle.items() if v != attacker.index) <= 1
    address = {v.index: v.address for v in fleet.vehicles}
    for r in (1, 2):
        assert sorted(view["flagged"][str(r)]) == sorted(address[rec.vehicle] for k, rec in records if k == r and rec.malicious)


def test_payouts_sum_to_the_escrow_and_skip_the_attacker(finished) -> None:
    _, fleet, task_id, view, w3, deployment = finished
    assert view["detail"] == SETTLED
    tasks = TasksClient(w3, deployment.tasks)
    credited = tasks.events("PayoutCredited", deployment.block_number, taskId=task_id)
    rewards = tasks.events("LeaderElected", deployment.block_number, taskId=task_id)
    (done,) = tasks.events("TaskFinished", deployment.block_number, taskId=task_id)
    paid = sum(ev.amount for ev in credited)  # type: ignore[attr-defined]
    assert paid == tasks.task(task_id).payouts_paid
    assert sum(ev.blockReward for ev in rewards) == 2 * BLOCK_REWARD  # type: ignore[attr-defined]
    assert 0 <= done.available - paid < 10 * len(credited)  # type: ignore[attr-defined]  # flooring dust only
    payees = {ev.payee for ev in credited}  # type: ignore[attr-defined]
    assert fleet.attackers[0].address not in payees
    assert payees == {v.address for v in fleet.vehicles if v.attack is None}


def test_audit_passes_in_process_and_from_the_cli(finished) -> None:
    stack, _, task_id, _, w3, deployment = finished
    gateway = GatewayClient(stack.cloud.url)
    result = Auditor(w3, deployment).audit(task_id, gateway.fetch)
    gateway.close()
    assert result.passed and len(result.blobs) >= 7
    cli = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "audit", "--task", str(task_id), "--rpc", stack.rpc_url,
         "--deployment", str(stack.deployment_file), "--gateway", stack.cloud.url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "audit passed" in cli.stdout


def test_cloud_reports_rounds_and_privacy_spend(finished) -> None:
    stack, fleet, task_id, view, _, _ = finished
    record = httpx.get(f"{stack.cloud.url}/tasks/{task_id}/rounds/2").json()
    assert record["round"] == 2 and len(record["trainers"]) == 8
    honest = {v.address for v in fleet.vehicles if v.attack is None}
    assert honest <= set(view["epsilon"])
    assert all(view["epsilon"][a] > 0 for a in honest) and view["epsilon_max"] == max(view["epsilon"].values())
    per_round = [r["epsilon_max"] for r in view["rounds"]]  # cumulative spend: rises round by round
    assert per_round == sorted(per_round) and per_round[-1] == view["epsilon_max"] and per_round[0] > 0
    assert httpx.get(f"{stack.cloud.url}/tasks/{task_id}/rounds/9").status_code == 404
    metrics = httpx.get(f"{stack.cloud.url}/metrics").text
    assert "bmfl_tasks_published_total 1.0" in metrics


def test_every_party_trains_with_the_sigma_calibrated_from_the_target(finished) -> None:
    """The publisher derives σ from the target ε; the cloud, the edges' assignments and
    the vehicles' accountants use that σ, and the smallest vehicle spends the target
    (its noisy sample count adds less than 0.01)."""
    stack, fleet, task_id, view, _, _ = finished
    sigma = view["draft"].training.noise_multiplier
    assert sigma != TrainingSpec().noise_multiplier and view["spec"]["training"]["noise_multiplier"] == sigma
    for v in fleet.vehicles:
        if v.attack is None:
            assert {s for _, s in v.privacy.accountant._steps} == {sigma, COUNT_NOISE}
    assert 0.99 * TARGET <= view["epsilon_max"] <= TARGET + 0.01
    assert all(e <= view["epsilon_max"] for e in view["epsilon"].values())
