"""``bmfl chain up | deploy | status``: a local chain, deployment, and what is deployed."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from web3 import Web3

from chain.anvil import AnvilNode
from chain.deploy import DEPLOYMENTS_DIR, deploy, is_deployed, load_deployment, save_deployment
from chain.registry import RegistryClient
from chain.tasks import TasksClient

chain_app = typer.Typer(help="Local chain (Anvil), contract deployment and status.", no_args_is_help=True)

RPC = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="BMFL_RPC_URL", help="JSON-RPC URL")
DIR = typer.Option(DEPLOYMENTS_DIR, "--deployments", help="directory of deployment files (one per chain id)")


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
def status(rpc: str = RPC, deployments: Path = DIR) -> None:
    """Chain id, block, deployed addresses, edges, vehicles and tasks."""
    w3 = Web3(Web3.HTTPProvider(rpc))
    chain_id = w3.eth.chain_id
    typer.echo(f"chain id {chain_id}, block {w3.eth.block_number}")
    try:
        dep = load_deployment(chain_id, deployments)
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
