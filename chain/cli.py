"""``bmfl chain up | deploy | status``: a local chain, deployment, and what is deployed."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from web3 import Web3

from chain.anvil import AnvilNode
from chain.deploy import DEPLOYMENTS_DIR, Deployment, deploy, is_deployed, load_deployment, save_deployment
from chain.registry import RegistryClient
from chain.tasks import TasksClient

chain_app = typer.Typer(help="Local chain (Anvil), contract deployment and status.", no_args_is_help=True)

RPC = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="BMFL_RPC_URL", help="JSON-RPC URL")
DIR = typer.Option(DEPLOYMENTS_DIR, "--deployments", help="directory of deployment files (one per chain id)")
FILE = typer.Option(
    None, "--deployment", envvar="BMFL_DEPLOYMENT", help="deployment JSON file, or a directory of them (default: --deployments)"
)


STACK_DEPLOYMENTS = Path("runs/stack/deployments")
"""Where ``bmfl up`` writes its deployment (``--run-dir`` default)."""


def _deployment(w3: Web3, deployment: Optional[Path], deployments: Path) -> Deployment:
    """The deployment file given, else ``<chain id>.json`` in the directory, else in
    ``bmfl up``'s run folder; FileNotFoundError if none."""
    if deployment is not None and not deployment.is_dir():
        return Deployment.model_validate_json(deployment.read_text())
    try:
        return load_deployment(w3.eth.chain_id, deployment or deployments)
    except FileNotFoundError:
        if deployment is not None or deployments != DEPLOYMENTS_DIR:
            raise
        return load_deployment(w3.eth.chain_id, STACK_DEPLOYMENTS)


def _deploy_and_save(w3: Web3, deployments: Path) -> None:
    operator = w3.eth.accounts[0]
    dep = deploy(w3, operator, cloud=operator)
    path = save_deployment(dep, deployments)
    typer.echo(f"registry {dep.registry}\ntasks    {dep.tasks}\nsaved    {path}")


@chain_app.command()
def up(
    port: int = typer.Option(8545, help="port to listen on"),
    chain_id: int = typer.Option(31337, help="chain id"),
    state: Path = typer.Option(Path("runs/chain/state.json"), help="state file, loaded at start and dumped at stop"),
    deployments: Path = DIR,
) -> None:
    """Run Anvil until Ctrl-C, deploying the contracts unless the state already has them."""
    with AnvilNode(port=port, chain_id=chain_id, state_path=state) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        try:
            present = is_deployed(w3, load_deployment(chain_id, deployments))
        except FileNotFoundError:
            present = False
        if not present:
            _deploy_and_save(w3, deployments)
        typer.echo(f"anvil on {node.url} (chain id {chain_id}); Ctrl-C stops and saves {state}")
        try:
            while node.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@chain_app.command("deploy")
def deploy_cmd(rpc: str = RPC, deployments: Path = DIR) -> None:
    """Deploy the contracts from the node's first account (operator and cloud)."""
    _deploy_and_save(Web3(Web3.HTTPProvider(rpc)), deployments)


@chain_app.command()
def status(rpc: str = RPC, deployments: Path = DIR, deployment: Optional[Path] = FILE) -> None:
    """Chain id, block, deployed addresses, edges, vehicles and tasks."""
    w3 = Web3(Web3.HTTPProvider(rpc))
    chain_id = w3.eth.chain_id
    typer.echo(f"chain id {chain_id}, block {w3.eth.block_number}")
    try:
        dep = _deployment(w3, deployment, deployments)
    except FileNotFoundError:
        typer.echo("not deployed (run `bmfl chain deploy`)")
        raise typer.Exit(1)
    if not is_deployed(w3, dep):
        typer.echo(f"deployment file says {dep.tasks}, but the chain has no code there")
        raise typer.Exit(1)
    registry = RegistryClient(w3, dep.registry)
    tasks = TasksClient(w3, dep.tasks)
    typer.echo(f"registry {dep.registry}\ntasks    {dep.tasks}")
    typer.echo(f"edges {registry.edge_count()}, vehicles {registry.vehicle_count()}, tasks {tasks.task_count()}")


@chain_app.command("tasks")
def tasks_cmd(
    rpc: str = RPC, deployments: Path = DIR, deployment: Optional[Path] = FILE,
    as_json: bool = typer.Option(False, "--json", help="print the list as JSON (wei as integers)"),
) -> None:  # fmt: skip
    """Every task on chain: id, publisher, status, rounds, escrow and what it has paid."""
    w3 = Web3(Web3.HTTPProvider(rpc))
    try:
        dep = _deployment(w3, deployment, deployments)
    except FileNotFoundError:
        typer.echo("not deployed (run `bmfl chain deploy`, or give --deployment)", err=True)
        raise typer.Exit(1)
    client = TasksClient(w3, dep.tasks)
    rows = []
    for task_id in range(1, client.task_count() + 1):
        info = client.task(task_id)
        rows.append({
            "task": task_id, "publisher": info.publisher, "status": info.status.name.lower(), "round": info.round,
            "max_rounds": info.max_rounds, "escrow_wei": info.escrow, "block_rewards_wei": info.rewards_paid,
            "payouts_wei": info.payouts_paid, "paid_wei": info.rewards_paid + info.payouts_paid,
        })  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo("\t".join(("task", "publisher", "status", "rounds", "escrow (wei)", "escrow (ETH)", "paid (wei)")))
    for r in rows:
        escrow_eth = format(Decimal(r["escrow_wei"]) / Decimal(10**18), "f")
        typer.echo("\t".join(str(x) for x in (
            r["task"], r["publisher"], r["status"], f"{r['round']}/{r['max_rounds']}", r["escrow_wei"], escrow_eth, r["paid_wei"],
        )))  # fmt: skip
    if not rows:
        typer.echo("no tasks")
