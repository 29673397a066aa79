"""``bmfl task refund``: the publisher's way back from an orphaned or stalled task.

A task is *orphaned* when it is active on chain but the cloud does not run it (escrowed,
then never published, e.g. the cloud refused the publication), and *stalled* when its
current step is idle past its deadline by one round duration. ``BMFLTasks.cancelTask``
(anyone may call it then) credits the unspent escrow, ``escrow − block rewards paid``, to
the publisher, who withdraws it with ``claim``. An orphaned task that is not stalled yet
is listed with the time it becomes refundable.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import httpx
import typer

from chain.tasks import Status
from service_kit.chain_access import ChainAccess
from launcher.account import CloudUrl, Deployment, Json, KeyFile, RpcUrl, connect_account, eth


@dataclass(frozen=True)
class Candidate:
    """An active task of the publisher that the cloud does not run or that stalled."""

    task_id: int
    orphaned: bool
    stalled: bool
    deadline: int  # chain time after which it is stalled
    refund_wei: int  # what cancelTask would credit: escrow − rounds run × block reward

    @property
    def refundable(self) -> bool:
        return self.stalled


def cloud_task_ids(cloud_url: str, timeout_s: float = 30.0) -> set[int]:
    """Ids of the tasks the cloud runs (``GET /tasks``)."""
    reply = httpx.get(cloud_url.rstrip("/") + "/tasks", timeout=timeout_s)
    reply.raise_for_status()
    return {int(task["task_id"]) for task in reply.json()}


def candidates(chain: ChainAccess, running: set[int]) -> list[Candidate]:
    """The publisher's active tasks that are orphaned (not in ``running``) or stalled."""
    # the block a cancelTask lands in is stamped now; an idle node's latest block may be older
    now = max(int(chain.w3.eth.get_block("latest")["timestamp"]), int(time.time()))
    out = []
    for task_id in range(1, chain.tasks.task_count() + 1):
        info = chain.tasks.task(task_id)
        if info.status != Status.ACTIVE or info.publisher != chain.address:
            continue
        stall_at = info.deadline + info.round_duration  # BMFLTasks: idle past the deadline by a round duration
        orphaned, stalled = task_id not in running, now > stall_at
        if orphaned or stalled:
            out.append(Candidate(task_id, orphaned, stalled, stall_at, info.escrow - info.rewards_paid))
    return out


def refund(chain: ChainAccess, tasks: list[Candidate]) -> int:
    """``cancelTask`` for each stalled task, then ``claim``; returns the wei claimed."""
    for task in tasks:
        if task.refundable:
            with chain.lock:
                chain.tasks.cancel_task(task.task_id)
    owed = chain.tasks.owed(chain.address)
    if owed:
        with chain.lock:
            chain.tasks.claim()
    return owed


def refund_command(
    key_file: Optional[Path] = KeyFile, cloud_url: str = CloudUrl, rpc_url: str = RpcUrl,
    deployment: Optional[Path] = Deployment,
    yes: bool = typer.Option(False, "--yes", help="cancel the stalled tasks and claim the refund (default: list only)"),
    as_json: bool = Json,
) -> None:  # fmt: skip
    """List the publisher's orphaned (escrowed, not run by the cloud) and stalled (deadline
    passed) tasks; with --yes, cancelTask each stalled one and claim the refund."""
    chain = connect_account(key_file, rpc_url, deployment)
    try:
        running = cloud_task_ids(cloud_url)
    except httpx.HTTPError as exc:
        typer.echo(f"the cloud at {cloud_url} did not answer ({exc}); listing stalled tasks only", err=True)
        running = None
    found = [c for c in candidates(chain, running or set()) if running is not None or c.stalled]
    if as_json:
        listed = [asdict(c) | {"refundable": c.refundable, "orphaned": c.orphaned and running is not None} for c in found]
        out: dict = {"publisher": chain.address, "tasks": listed}
        if yes:
            before = chain.w3.eth.get_balance(chain.address)
            out |= {"claimed_wei": refund(chain, found), "balance_before_wei": before, "balance_after_wei": chain.w3.eth.get_balance(chain.address)}
        typer.echo(json.dumps(out, indent=2))
        return
    if not found:
        typer.echo(f"no orphaned or stalled tasks of {chain.address}")
        return
    for c in found:
        kind = " and ".join(k for k, on in (("orphaned", c.orphaned and running is not None), ("stalled", c.stalled)) if on)
        when = "refundable now" if c.refundable else f"refundable after chain time {c.deadline}"
        typer.echo(f"task {c.task_id}: {kind}, {when}, refund {eth(c.refund_wei)}")
    if not yes:
        typer.echo("dry run: pass --yes to cancel the stalled tasks and claim")
        return
    if not any(c.refundable for c in found) and not chain.tasks.owed(chain.address):
        typer.echo("nothing is refundable yet: no deadline has passed")
        return
    before = chain.w3.eth.get_balance(chain.address)
    claimed = refund(chain, found)
    after = chain.w3.eth.get_balance(chain.address)
    typer.echo(f"claimed {eth(claimed)}; balance {eth(before)} -> {eth(after)} (gas {eth(before + claimed - after)})")


tasks_alias = typer.Typer(help="Alias of `bmfl task` kept for `bmfl tasks refund`.", no_args_is_help=True)
tasks_alias.command("refund")(refund_command)
