"""``bmfl up | down | status``: the docker-compose topology (chain, deployer, edges,
cloud, vehicle fleet) as local processes, with the same ``BMFL_*`` variables built from
the same settings models. ``bmfl up`` returns once everything is ready and leaves the
services running, each logging to ``RUN_DIR/logs/<service>.log``; ``RUN_DIR/stack.json``
records their pids, ports and URLs for ``bmfl status`` and ``bmfl down`` (any shell).
Variables the launcher does not set (e.g. ``BMFL_FLEET_ATTACK``) pass through from the
caller's environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from launcher.health import NotReady, blob_store_health

if TYPE_CHECKING:
    from launcher.stack import LocalStack

STATE_FILE = "stack.json"
RUN_DIR = typer.Option(Path("runs/stack"), "--run-dir", help="run folder: logs, state file, chain state, SQLite files, blobs")


def _attach(state_file: Path) -> LocalStack:
    from launcher.stack import LocalStack  # imports torch: not for `bmfl --help`

    return LocalStack.attach(state_file)


def _running(state_file: Path) -> list[str]:
    return [s.name for s in _attach(state_file).services.values() if s.running] if state_file.exists() else []


def _detail(health: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in health.items() if k not in ("service", "status"))


def up(
    run_dir: Path = RUN_DIR,
    edges: int = typer.Option(5, min=1, help="number of MEC edge servers"),
    vehicles: int = typer.Option(50, min=0, help="vehicles of the fleet service (0: no fleet)"),
    seed: int = typer.Option(0, help="seed of the fleet (keys, data, positions)"),
    blob_store: str = typer.Option("", help="a directory or kubo:http://host:5001 (default: RUN_DIR/blobs)"),
    round_timeout: float = typer.Option(300.0, help="seconds a round waits for the selected vehicles"),
    free_ports: bool = typer.Option(False, help="pick free ports instead of 8545, 8000 and 8100 + i"),
    log_format: str = typer.Option("text", help="the edges' and the cloud's logs: text, or json (one object per line)"),
) -> None:
    """Start the chain, the edges, the cloud and a vehicle fleet as local processes; return once all are ready."""
    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    run_dir = run_dir.resolve()
    state_file = run_dir / STATE_FILE
    if running := _running(state_file):
        typer.echo(f"already up in {run_dir} ({', '.join(running)}): run `bmfl down --run-dir {run_dir}` first", err=True)
        raise typer.Exit(1)
    if blob_store and not blob_store.startswith("kubo:"):
        blob_store = str(Path(blob_store).resolve())
    from launcher.stack import LocalStack

    stack = LocalStack(
        run_dir, edges=edges, vehicles=vehicles, seed=seed, blob_store=blob_store, round_timeout_s=round_timeout,
        fixed_ports=not free_ports, state_file=state_file, log_format=log_format,
    )  # fmt: skip
    console = Console()
    try:
        with console.status(f"starting the chain, {edges} edges, the cloud and {vehicles} vehicles (logs in {run_dir / 'logs'})"):
            stack.start()
    except (RuntimeError, OSError) as exc:  # TimeoutError and FileNotFoundError are OSErrors
        stack.stop()
        typer.echo(f"bmfl up failed, everything it started is stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except BaseException:
        stack.stop()
        raise
    console.print(f"dashboard {stack.cloud.url}/ui", soft_wrap=True)
    for service in stack.services.values():
        console.print(f"{service.name:8} pid {service.pid:<7} {service.url}  log {service.log_path}")
    console.print(
        f"deployment {stack.deployment_file}\nblob store {stack.blob_store}\n"
        f"audit a task with: bmfl audit --task ID --run-dir {run_dir}\nstop with: bmfl down --run-dir {run_dir}"
    )


def down(run_dir: Path = RUN_DIR, timeout: float = typer.Option(15.0, help="seconds before SIGKILL")) -> None:
    """Stop every service `bmfl up` started in RUN_DIR (SIGTERM, SIGKILL after the timeout)."""
    state_file = run_dir.resolve() / STATE_FILE
    if not state_file.exists():
        typer.echo(f"nothing runs in {run_dir} (no {STATE_FILE})")
        return
    for name, graceful in _attach(state_file).stop(timeout).items():
        typer.echo(f"{name:8} {'stopped' if graceful else f'killed after {timeout:.0f} s'}")


def status(run_dir: Path = RUN_DIR) -> None:
    """Each service's process and health, and the chain and blob store endpoints."""
    state_file = run_dir.resolve() / STATE_FILE
    if not state_file.exists():
        typer.echo(f"nothing runs in {run_dir} (no {STATE_FILE})")
        raise typer.Exit(1)
    stack = _attach(state_file)
    table = Table("service", "pid", "health", "url", "detail", title=f"BMFL stack in {stack.run_dir}")
    healthy = True
    for service in stack.services.values():
        try:
            state, detail = ("up", _detail(service.health())) if service.running else ("exited", f"see {service.log_path}")
        except NotReady as exc:
            state, detail = "not ready", str(exc)
        healthy &= state == "up"
        table.add_row(service.name, str(service.pid), state, service.url, detail)
    console = Console()
    console.print(table)
    try:
        blobs = _detail(blob_store_health(stack.blob_store))
    except NotReady as exc:
        blobs, healthy = f"unreachable: {exc}", False
    console.print(f"dashboard  {stack.cloud.url}/ui\nchain      {stack.rpc_url}\nblob store {stack.blob_store} ({blobs})\ndeployment {stack.deployment_file}")
    if not healthy:
        raise typer.Exit(1)
