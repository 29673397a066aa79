"""``bmfl up`` / ``bmfl status`` / ``bmfl down`` as a user runs them, each a separate
process: the compose topology (chain, deployer, 5 edges, cloud, a fleet of 4 vehicles)
comes up on loopback, one round of a task runs across the processes, the deployer can
be run again to add an edge, ``bmfl down`` leaves no process of any service's group
behind, and ``bmfl up`` on the same run folder resumes the chain and the services' state."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from pydantic import SecretStr

from bmfl.data import load_dataset
from bmfl.protocol.schemas import TaskDraft, TrainingSpec
from launcher import procs
from service_kit.chain_access import connect
from launcher.deployer import DeployerSettings, provision
from launcher.topology import CLOUD, FIRST_EDGE, FLEET, OPERATOR, PUBLISHER, edge_positions
from chain.anvil import dev_key
from chain.deploy import Deployment
from chain.registry import RegistryClient
from tooling import requires_anvil
from launcher.publisher import Publisher
from launcher.stack import LocalStack, ServiceProcess
from service_kit.serve import LISTEN_FD, listening_socket, serve

pytestmark = [pytest.mark.slow, requires_anvil]

SERVICES = ["chain", *(f"edge-{i}" for i in range(5)), "cloud", "fleet"]


def bmfl(*args: object) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BMFL_FLEET_TORCH_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    run_dir = tmp_path_factory.mktemp("up")
    up = bmfl("up", "--run-dir", run_dir, "--vehicles", 4, "--seed", 5, "--free-ports", "--round-timeout", 120)
    state = json.loads((run_dir / "stack.json").read_text()) if (run_dir / "stack.json").exists() else {}
    yield up, run_dir, state
    bmfl("down", "--run-dir", run_dir)


def url_of(state: dict[str, Any], name: str) -> str:
    return next(s["url"] for s in state["services"] if s["name"] == name)


def test_up_starts_every_service_and_status_reports_them(stack: Any) -> None:
    up, run_dir, state = stack
    assert up.returncode == 0, up.stdout + up.stderr
    assert [s["name"] for s in state["services"]] == SERVICES
    assert up.stdout.splitlines()[0] == f"dashboard {url_of(state, 'cloud')}/ui"  # the dashboard's URL first
    assert all(procs.is_running(s["pid"], s["started"]) for s in state["services"])
    assert all((run_dir / "logs" / f"{name}.log").is_file() for name in SERVICES)
    status = bmfl("status", "--run-dir", run_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "chain_id 31337" in status.stdout and "associated 4, vehicles 4" in status.stdout
    assert f"dashboard  {url_of(state, 'cloud')}/ui" in status.stdout
    again = bmfl("up", "--run-dir", run_dir)
    assert again.returncode == 1 and "already up" in again.stderr


def test_one_round_of_a_task_runs_across_the_processes_and_audits(stack: Any) -> None:
    _, run_dir, state = stack
    cloud = url_of(state, "cloud")
    _, test = load_dataset("mnist")
    publisher = Publisher(connect(state["rpc_url"], state["deployment_file"], dev_key(PUBLISHER)), cloud)
    draft = TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=10**16, training=TrainingSpec(epochs=1))
    task_id = publisher.publish(draft, test.subset(list(range(300))))["task_id"]
    deadline = time.monotonic() + 600
    while (view := httpx.get(f"{cloud}/tasks/{task_id}").json())["status"] in ("ready", "running"):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert view["status"] == "finished", view
    assert view["rounds_finished"] == 1 and len(view["accuracy"]) == 1
    assert len(httpx.get(f"{cloud}/tasks/{task_id}/rounds/1").json()["trainers"]) == 4
    # the auditor needs one flag against `bmfl up`: the run folder (its default is runs/stack)
    audit = bmfl("audit", "--task", task_id, "--run-dir", run_dir)
    assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout + audit.stderr


def test_the_deployer_runs_again_without_redeploying_and_adds_a_new_edge(stack: Any) -> None:
    _, run_dir, state = stack
    before = Deployment.model_validate_json(Path(state["deployment_file"]).read_text())
    new_edge = Account.from_key(dev_key(FIRST_EDGE + 5)).address
    settings = DeployerSettings(
        rpc_url=state["rpc_url"], operator_key=SecretStr(dev_key(OPERATOR)), cloud=Account.from_key(dev_key(CLOUD)).address,
        edges=[Account.from_key(dev_key(FIRST_EDGE + i)).address for i in range(5)] + [new_edge],
        deployments=run_dir / "deployments",
    )  # fmt: skip
    assert provision(settings) == Path(state["deployment_file"])
    assert Deployment.model_validate_json(Path(state["deployment_file"]).read_text()) == before
    registry = RegistryClient(connect(state["rpc_url"], state["deployment_file"], dev_key(OPERATOR)).w3, before.registry)
    assert registry.is_edge(new_edge) and registry.edge_count() == 6


def test_the_fleet_pays_from_its_own_key_which_the_deployer_funds(stack: Any) -> None:
    _, run_dir, state = stack
    w3 = connect(state["rpc_url"], state["deployment_file"], dev_key(OPERATOR)).w3
    fleet, newcomer = Account.from_key(dev_key(FLEET)).address, Account.create().address
    assert 0 < w3.eth.get_balance(fleet) < 10 * 10**18  # funded to 10 ETH by `bmfl up`'s deployer, then paid 4 vehicles
    settings = DeployerSettings(
        rpc_url=state["rpc_url"], operator_key=SecretStr(dev_key(OPERATOR)), cloud=Account.from_key(dev_key(CLOUD)).address,
        deployments=run_dir / "deployments", fund=[newcomer], fund_wei=3 * 10**18,
    )  # fmt: skip
    provision(settings)
    assert w3.eth.get_balance(newcomer) == 3 * 10**18
    nonce = w3.eth.get_transaction_count(Account.from_key(dev_key(OPERATOR)).address)
    provision(settings)  # topped up already: nothing sent
    assert w3.eth.get_balance(newcomer) == 3 * 10**18
    assert w3.eth.get_transaction_count(Account.from_key(dev_key(OPERATOR)).address) == nonce


def test_down_stops_every_process_group_and_keeps_the_chain_state(stack: Any) -> None:
    _, run_dir, state = stack
    down = bmfl("down", "--run-dir", run_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [line.split()[0] for line in down.stdout.splitlines()] == SERVICES[::-1]
    for service in state["services"]:
        assert not procs.is_running(service["pid"]), service["name"]
        assert procs.group_members(service["pid"]) == [], service["name"]
    assert not (run_dir / "stack.json").exists() and (run_dir / "chain" / "state.json").is_file()
    assert bmfl("status", "--run-dir", run_dir).returncode == 1


def test_up_again_resumes_from_the_chain_state_and_the_sqlite_files(stack: Any) -> None:
    _, run_dir, _ = stack
    up = bmfl("up", "--run-dir", run_dir, "--vehicles", 0, "--free-ports")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "stack.json").read_text())
        tasks = httpx.get(url_of(state, "cloud") + "/tasks").json()
        assert [(t["task_id"], t["status"]) for t in tasks] == [(1, "finished")]
    finally:
        assert bmfl("down", "--run-dir", run_dir).returncode == 0


def test_up_with_more_edges_keeps_the_existing_edges_where_they_were(stack: Any) -> None:
    _, run_dir, _ = stack
    up = bmfl("up", "--run-dir", run_dir, "--vehicles", 0, "--free-ports", "--edges", 7)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "stack.json").read_text())
        health = [httpx.get(url_of(state, f"edge-{i}") + "/healthz").json() for i in range(7)]
        assert [(h["index"], h["address"]) for h in health] == [(i, Account.from_key(dev_key(FIRST_EDGE + i)).address) for i in range(7)]
        at = [c for h in health for c in (h["x"], h["y"])]
        assert at[:10] == pytest.approx([c for p in edge_positions(5) for c in p])  # where the 5-edge stack had them
        listed = httpx.get(url_of(state, "cloud") + "/edges").json()
        assert [c for e in listed for c in (e["x"], e["y"])] == pytest.approx(at)
    finally:
        assert bmfl("down", "--run-dir", run_dir).returncode == 0


def test_edge_positions_do_not_depend_on_the_number_of_edges() -> None:
    every = edge_positions(12)
    assert all(edge_positions(n) == every[:n] for n in range(1, 12))
    assert len({(round(x, 6), round(y, 6)) for x, y in every}) == 12


def test_a_stacks_service_ports_stay_taken_from_the_moment_they_are_chosen(tmp_path: Path) -> None:
    """The race CI once lost: a port picked free, then bound by another process before the
    cloud bound it, so the cloud's readiness probe and the fleet reached someone else's
    service. The launcher now holds each service's socket from the moment it is chosen."""
    stack = LocalStack(tmp_path, edges=2)
    topo = stack.topology()
    ports = [topo.cloud_port, *topo.edge_ports]
    try:
        assert len(set(ports)) == 3
        for port in ports:
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
    finally:
        stack.stop()
    for port in ports:  # released by stop() when no service took them
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))


def test_a_service_whose_port_someone_else_holds_refuses_to_start(tmp_path: Path) -> None:
    with listening_socket("127.0.0.1") as squatter:
        url = f"http://127.0.0.1:{squatter.getsockname()[1]}"
        service = ServiceProcess("edge-0", [sys.executable, "-c", "pass"], {}, url, tmp_path / "edge.log", inherits_socket=True)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{squatter.getsockname()[1]}"):
            service.start()
        assert service.pid is None


def test_a_service_refuses_an_inherited_socket_on_another_port_than_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with listening_socket("127.0.0.1") as inherited:
        monkeypatch.setenv(LISTEN_FD, str(os.dup(inherited.fileno())))  # serve() owns (and closes) what it inherits
        port = inherited.getsockname()[1]
        with pytest.raises(ValueError, match=f"listens on port {port}, the settings say {port + 1}"):
            serve(object(), "127.0.0.1", port + 1)
