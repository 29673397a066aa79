"""``bmfl audit --task ID``: re-derive a task's contributions and payouts from chain
data alone, check every recorded model blob, print the tables, exit 1 on any mismatch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from chain.deploy import DEPLOYMENTS_DIR

if TYPE_CHECKING:
    from rich.console import Console

    from chain.audit import TaskAudit


def audit(
    task: int = typer.Option(..., "--task", help="task id"),
    rpc: str = typer.Option("http://127.0.0.1:8545", "--rpc", envvar="BMFL_RPC_URL", help="JSON-RPC URL"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", help="deployment JSON file (else --deployments)"),
    deployments: Path = typer.Option(DEPLOYMENTS_DIR, "--deployments", help="directory of deployment files, one per chain id"),
    gateway: Optional[str] = typer.Option(None, "--gateway", envvar="BMFL_GATEWAY_URL", help="URL of an /ipfs/{cid} gateway"),
    store: Optional[Path] = typer.Option(
        None, "--store", exists=True, file_okay=False, help="a local blob store directory, instead of a gateway"
    ),
) -> None:
    """Audit a task from the chain: contributions, consensus, payouts and blobs."""
    from rich.console import Console
    from web3 import Web3

    from bmfl.blobs.gateway_client import GatewayClient
    from bmfl.blobs.local import LocalBlobStore
    from bmfl.blobs.retry import RetryPolicy
    from chain.audit import Auditor
    from chain.deploy import Deployment, load_deployment
    from chain.tasks import Status

    if (gateway is None) == (store is None):
        typer.echo("error: give exactly one of --gateway and --store to check the blobs", err=True)
        raise typer.Exit(2)
    w3 = Web3(Web3.HTTPProvider(rpc))
    try:
        dep = (
            Deployment.model_validate_json(deployment.read_text()) if deployment
            else load_deployment(w3.eth.chain_id, deployments)
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        typer.echo(f"error: no deployment: {exc}", err=True)
        raise typer.Exit(2) from None
    auditor = Auditor(w3, dep)
    if auditor.task(task).status == Status.NONE:
        typer.echo(f"error: no task {task} on chain {dep.chain_id}", err=True)
        raise typer.Exit(2)
    if gateway is not None:
        client = GatewayClient(gateway, timeout_s=30.0, retry=RetryPolicy(attempts=2))
        result = auditor.audit(task, client.fetch)
        client.close()
    else:
        result = auditor.audit(task, LocalBlobStore(store).get)  # type: ignore[arg-type]
    render(result, Console())
    raise typer.Exit(0 if result.passed else 1)


def render(result: "TaskAudit", console: "Console") -> None:
    """The payee table, a summary of the other checks (mismatches listed), the blob table
    and the verdict."""
    from rich.table import Table

    from chain.audit import PAYEE_SECTIONS
    from chain.tasks import Status

    mark = {True: "[green]ok[/]", False: "[red]MISMATCH[/]"}
    console.print(
        f"[bold]task {result.task_id}[/]: {result.status.name.lower()}, {result.rounds} rounds finalized, "
        f"escrow {result.escrow} wei"
    )
    payees = Table(title="payees (wei)")
    for col in ("role", "payee", "recomputed", "credited on chain", ""):
        payees.add_column(col, justify="right" if col in ("recomputed", "credited on chain") else "left")
    for c in result.comparisons:
        if c.section in PAYEE_SECTIONS:
            payees.add_row(c.section, c.subject, f"{c.recomputed:,}", f"{c.on_chain:,}", mark[c.ok])
    console.print(payees)
    if result.status == Status.ACTIVE:
        console.print("payouts are credited when the task finishes; only block rewards so far")
    checks = Table(title="re-derived checks")
    for col in ("check", "count", "mismatches"):
        checks.add_column(col)
    sections = dict.fromkeys(c.section for c in result.comparisons if c.section not in PAYEE_SECTIONS)
    for section in sections:
        rows = [c for c in result.comparisons if c.section == section]
        bad = [c for c in rows if not c.ok]
        checks.add_row(section, str(len(rows)), "[green]0[/]" if not bad else f"[red]{len(bad)}[/]")
    console.print(checks)
    for c in result.comparisons:
        if not c.ok and c.section not in PAYEE_SECTIONS:
            console.print(f"[red]{c.section} {c.subject}: recomputed {c.recomputed}, on chain {c.on_chain}")
    blobs = Table(title="model blobs recorded on chain")
    for col in ("source", "CID", "recorded sha2-256", "status"):
        blobs.add_column(col)
    for b in result.blobs:
        status = "[green]ok[/]" if b.ok else f"[red]{b.status}[/] {b.detail}"
        blobs.add_row(b.blob.source, b.blob.cid or "-", b.blob.digest[:10] + "…" + b.blob.digest[-6:], status)
    console.print(blobs)
    if result.passed:
        console.print("[bold green]audit passed[/]: every payout, contribution and blob matches the chain")
    else:
        n_bad = sum(not c.ok for c in result.comparisons)
        n_blobs = sum(not b.ok for b in result.blobs)
        console.print(f"[bold red]audit FAILED[/]: {n_bad} mismatching numbers, {n_blobs} bad or unreachable blobs")
