"""``bmfl audit --task ID``: re-derive a task's contributions and payouts from chain
data alone, check every recorded model blob and, with ``--reexecute``, re-run every
round from the revealed test set; print the tables (or ``--json``), exit 1 on any
mismatch, 2 when the audit cannot run.

Where to look, in order: the flags given; else a local stack's run folder (``--run-dir``,
default ``runs/stack`` as ``bmfl up`` writes it; ``bmfl demo`` prints its own): its
``stack.json`` names the chain, the blob store and the cloud, its ``deployments/`` the
contracts and ``fleet/receipts.jsonl`` the vehicles' receipts; else the compose
defaults (chain on 127.0.0.1:8545, ``deployments/``, the cloud's gateway on
127.0.0.1:8000)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

import typer

from chain.deploy import DEPLOYMENTS_DIR

if TYPE_CHECKING:
    from rich.console import Console

    from chain.audit import Auditor, TaskAudit
    from chain.reexecute import Reexecution

Fetch = Callable[[str], bytes]

RPC_DEFAULT = "http://127.0.0.1:8545"
CLOUD_DEFAULT = "http://127.0.0.1:8000"
RUN_DIR_DEFAULT = Path("runs/stack")


@dataclass
class Sources:
    """Where the audit reads the chain, the contracts, blobs, the cloud and receipts."""

    rpc: str = RPC_DEFAULT
    deployment: Path | None = None
    deployments: Path = DEPLOYMENTS_DIR
    blob_store: str | None = None
    gateway: str | None = None
    cloud: str = CLOUD_DEFAULT
    receipts: list[Path] = field(default_factory=list)


def resolve_sources(
    run_dir: Path, rpc: str | None, deployment: Path | None, deployments: Path | None, gateway: str | None,
    store: Path | None, cloud: str | None, receipts: list[Path],
) -> Sources:  # fmt: skip
    """The flags given, completed from the run folder's ``stack.json`` and files, else the
    compose defaults (see the module docstring)."""
    src = Sources()
    state_file = run_dir / "stack.json"
    if state_file.is_file():
        state: dict[str, Any] = json.loads(state_file.read_text())
        src.rpc, src.blob_store = state["rpc_url"], state["blob_store"]
        urls = {s["name"]: s["url"] for s in state.get("services", [])}
        src.cloud = urls.get("cloud", src.cloud)
    elif (run_dir / "blobs").is_dir():
        src.blob_store = str(run_dir / "blobs")
    if (run_dir / "deployments").is_dir():
        src.deployments = run_dir / "deployments"
    if (run_dir / "fleet" / "receipts.jsonl").is_file():
        src.receipts = [run_dir / "fleet" / "receipts.jsonl"]
    src.rpc = rpc or src.rpc
    src.cloud = cloud or src.cloud
    src.deployment = deployment if deployment and not deployment.is_dir() else None
    if deployment is not None and deployment.is_dir():
        src.deployments = deployment
    src.deployments = deployments or src.deployments
    if gateway or store:
        src.gateway, src.blob_store = gateway, str(store) if store else None
    if src.blob_store is None and src.gateway is None:
        src.gateway = src.cloud  # the cloud serves /ipfs/{cid} (compose, bmfl up)
    src.receipts = receipts or src.receipts
    return src


def audit(
    task: int = typer.Option(..., "--task", help="task id"),
    run_dir: Path = typer.Option(RUN_DIR_DEFAULT, "--run-dir", envvar="BMFL_RUN_DIR", help="a local stack's run folder (bmfl up, bmfl demo): chain, blobs, cloud and receipts from it"),
    rpc: Optional[str] = typer.Option(None, "--rpc", envvar="BMFL_RPC_URL", help=f"JSON-RPC URL (default: the run folder's, else {RPC_DEFAULT})"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", envvar="BMFL_DEPLOYMENT", help="deployment JSON file, or a directory of them (one per chain id) (default: RUN_DIR/deployments, else deployments/)"),
    deployments: Optional[Path] = typer.Option(None, "--deployments", hidden=True, help="alias of --deployment DIR"),
    gateway: Optional[str] = typer.Option(None, "--gateway", envvar="BMFL_GATEWAY_URL", help="URL of an /ipfs/{cid} gateway (default: the run folder's blob store, else the cloud's gateway)"),
    store: Optional[Path] = typer.Option(None, "--store", exists=True, file_okay=False, help="a local blob store directory, instead of a gateway"),
    no_blobs: bool = typer.Option(False, "--no-blobs", help="skip fetching the model blobs (chain data only)"),
    reexecute: bool = typer.Option(False, "--reexecute", help="re-run every round with the round core (needs the revealed test set)"),
    test_set: Optional[str] = typer.Option(None, "--test-set", help="the revealed test set: a file, or its CID in the blob source (implies --reexecute)"),
    spec: Optional[Path] = typer.Option(None, "--spec", exists=True, dir_okay=False, help="the task's spec JSON (TaskSpec) (default: the cloud's GET /tasks/{id})"),
    cloud: Optional[str] = typer.Option(None, "--cloud", envvar="BMFL_CLOUD_URL", help=f"cloud URL, for the spec and as gateway (default: the run folder's, else {CLOUD_DEFAULT})"),
    receipts: list[Path] = typer.Option([], "--receipts", exists=True, help="vehicles' receipts: JSON-lines files or folders of them (repeatable) (default: RUN_DIR/fleet/receipts.jsonl)"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON (wei as integers)"),
) -> None:
    """Audit a task from the chain: contributions, consensus, payouts and blobs; with
    --reexecute every flag, Λ, θ, score, preliminary and global model re-run."""
    from web3 import Web3

    from chain.audit import Auditor
    from chain.deploy import Deployment, load_deployment
    from chain.tasks import Status

    if gateway is not None and store is not None:
        _fail("give at most one of --gateway and --store")
    src = resolve_sources(run_dir, rpc, deployment, deployments, gateway, store, cloud, receipts)
    w3 = Web3(Web3.HTTPProvider(src.rpc))
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:  # connection refused, not JSON-RPC
        _fail(f"no chain at {src.rpc} ({type(exc).__name__}); start one (bmfl up) or give --rpc / --run-dir")
    try:
        dep = (
            Deployment.model_validate_json(src.deployment.read_text()) if src.deployment
            else load_deployment(chain_id, src.deployments)
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        _fail(f"no deployment: {exc} (give --deployment FILE or --run-dir of the stack)")
    auditor = Auditor(w3, dep)
    if auditor.task(task).status == Status.NONE:
        _fail(f"no task {task} on chain {dep.chain_id} (tasks 1…{auditor.tasks.task_count()})")
    fetch, close = (None, lambda: None) if no_blobs else _blob_source(src)
    try:
        reexecution = _reexecution(auditor, task, src, fetch, test_set, spec) if reexecute or test_set else None
        result = auditor.audit(task, fetch, reexecution)
    finally:
        close()
    accounts = {c.account for c in result.comparisons if c.account}
    balances = auditor.balances(accounts)
    if as_json:
        typer.echo(json.dumps(to_json(result, balances, src), indent=2))
    else:
        render(result, _console(), balances, orphaned=_orphaned(auditor, task))
    raise typer.Exit(0 if result.passed else 1)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _console() -> "Console":
    """Rich output; when piped, plain and wide enough that no number is ever cut."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=10_000, no_color=True, soft_wrap=True)


def _blob_source(src: Sources) -> tuple[Fetch, Callable[[], None]]:
    """``fetch`` (verifying each blob against its CID) and how to close it."""
    from bmfl.blobs.gateway_client import GatewayClient
    from bmfl.blobs.retry import RetryPolicy

    if src.gateway is not None:
        client = GatewayClient(src.gateway, timeout_s=30.0, retry=RetryPolicy(attempts=2))
        return client.fetch, client.close
    assert src.blob_store is not None
    if src.blob_store.startswith("kubo:"):
        from bmfl.blobs.kubo import KuboBlobStore

        kubo = KuboBlobStore(src.blob_store.removeprefix("kubo:"))
        return kubo.get, kubo.close
    from bmfl.blobs.local import LocalBlobStore

    if not Path(src.blob_store).is_dir():
        _fail(f"blob store {src.blob_store} is not a directory (give --gateway, --store or --no-blobs)")
    return LocalBlobStore(src.blob_store).get, lambda: None


def _reexecution(
    auditor: "Auditor", task: int, src: Sources, fetch: Fetch | None, test_set: str | None, spec_file: Path | None
) -> "Reexecution":
    """The :class:`chain.reexecute.Reexecution` of ``task``: spec, revealed test set, receipts."""
    import httpx

    from bmfl.protocol.schemas import TaskSpec
    from chain.reexecute import Reexecution, read_receipts

    if fetch is None:
        _fail("--reexecute needs the blobs: drop --no-blobs")
    if test_set is None:
        _fail("--reexecute needs the revealed test set: --test-set FILE|CID")
    path = Path(test_set)
    try:
        revealed = path.read_bytes() if path.is_file() else fetch(test_set)
    except Exception as exc:
        _fail(f"test set {test_set}: not a file, and not fetchable as a CID ({type(exc).__name__}: {exc})")
    if spec_file is not None:
        task_spec = TaskSpec.model_validate_json(spec_file.read_text())
    else:
        try:
            reply = httpx.get(f"{src.cloud.rstrip('/')}/tasks/{task}", timeout=30.0)
            reply.raise_for_status()
            task_spec = TaskSpec.model_validate(reply.json()["spec"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            _fail(f"no spec of task {task} from the cloud at {src.cloud} ({type(exc).__name__}: {exc}); give --spec FILE")
    return Reexecution(auditor, fetch, task_spec, revealed, read_receipts(src.receipts))


def _orphaned(auditor: "Auditor", task: int) -> str:
    """Why a task that never ran has no blobs or rounds ('' for a task that ran)."""
    from chain.tasks import Status

    info = auditor.task(task)
    if info.round > 0:
        return ""
    if info.status == Status.CANCELLED:
        return f"task {task} was cancelled before its first round: its escrow went back to the publisher"
    return (
        f"task {task} was escrowed but never started: the publication to the cloud failed or never happened, so its "
        "initial model may never have been uploaded; the publisher can refund it with `bmfl tasks refund` once it stalls"
    )


def eth(wei: int) -> str:
    """Wei as ETH, exactly (no rounding)."""
    text = format(Decimal(wei) / Decimal(10**18), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def to_json(result: "TaskAudit", balances: dict[str, tuple[int, int]], src: Sources | None = None) -> dict[str, Any]:
    """The full result: every comparison and blob with its verdict, wei as integers."""
    data = result.model_dump(mode="json")
    data["status"] = result.status.name.lower()
    data["passed"] = result.passed
    for c, out in zip(result.comparisons, data["comparisons"]):
        out["ok"] = c.ok
    for b, out in zip(result.blobs, data["blobs"]):
        out["ok"] = b.ok
    data["accounts"] = {a: {"claimed_wei": c, "outstanding_wei": o} for a, (c, o) in balances.items()}
    if src is not None:
        data["sources"] = {"rpc": src.rpc, "gateway": src.gateway, "blob_store": src.blob_store, "cloud": src.cloud}
    return data


def render(
    result: "TaskAudit", console: "Console", balances: dict[str, tuple[int, int]] | None = None, orphaned: str = ""
) -> None:
    """The payee table (wei, ETH, claimed and outstanding per account), a summary of the
    other checks (every mismatch on its own line), the blob table and the verdict."""
    from rich.table import Table

    from chain.audit import PAYEE_SECTIONS
    from chain.tasks import Status

    balances = balances or {}
    mark = {True: "[green]ok[/]", False: "[red]MISMATCH[/]"}
    console.print(
        f"[bold]task {result.task_id}[/]: {result.status.name.lower()}, {result.rounds} rounds finalized, "
        f"escrow {result.escrow} wei ({eth(result.escrow)} ETH)"
    )
    if orphaned:
        console.print(f"[yellow]{orphaned}[/]")
    payees = Table(title="payees (wei)")
    numeric = ("recomputed", "credited on chain", "ETH", "claimed (account)", "outstanding (account)")
    for col in ("role", "payee", *numeric, ""):
        payees.add_column(col, justify="right" if col in numeric else "left", no_wrap=True, overflow="fold")
    for c in result.comparisons:
        if c.section in PAYEE_SECTIONS:
            claimed, outstanding = balances.get(c.account, (None, None))
            payees.add_row(
                c.section, c.subject, f"{c.recomputed:,}", f"{c.on_chain:,}", eth(c.on_chain),
                "-" if claimed is None else f"{claimed:,}", "-" if outstanding is None else f"{outstanding:,}", mark[c.ok],
            )  # fmt: skip
    console.print(payees)
    if result.status == Status.ACTIVE:
        console.print("payouts are credited when the task finishes; only block rewards so far")
    checks = Table(title="re-derived checks" + (" and re-execution" if result.reexecuted else ""))
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
            console.print(f"[red]MISMATCH {c.line()}[/]", markup=True, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if result.blobs:
        blobs = Table(title="model blobs recorded on chain")
        for col in ("source", "CID", "recorded sha2-256", "status"):
            blobs.add_column(col, no_wrap=True, overflow="fold")
        for b in result.blobs:
            status = "[green]ok[/]" if b.ok else f"[red]{b.status}[/] {b.detail}"
            blobs.add_row(b.blob.source, b.blob.cid or "-", b.blob.digest, status)
        console.print(blobs)
    if result.passed:
        what = "every payout, contribution" + (", re-executed round" if result.reexecuted else "") + " and blob"
        console.print(f"[bold green]audit passed[/]: {what} matches the chain")
    else:
        n_bad = sum(not c.ok for c in result.comparisons)
        n_blobs = sum(not b.ok for b in result.blobs)
        console.print(f"[bold red]audit FAILED[/]: {n_bad} mismatching numbers, {n_blobs} bad or unreachable blobs")
