"""``bmfl claim``: any payee (vehicle, edge, a refunded publisher) withdraws what the
contract credited to it. Credits are pull payments: ``settle`` (payouts), ``finalizeRound``
(block rewards), ``cancelTask`` and ``sweep`` (refunds) add to ``BMFLTasks.owed``, and one
``claim()`` pays out everything owed across all tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from launcher.account import Deployment, Json, KeyFile, RpcUrl, connect_account, eth


def claim(
    key_file: Optional[Path] = KeyFile, rpc_url: str = RpcUrl, deployment: Optional[Path] = Deployment,
    dry_run: bool = typer.Option(False, "--dry-run", help="only show what is owed"),
    as_json: bool = Json,
) -> None:  # fmt: skip
    """Withdraw everything credited to the key's account, across tasks (BMFLTasks.claim)."""
    chain = connect_account(key_file, rpc_url, deployment)
    tasks, address = chain.tasks, chain.address
    by_task: dict[int, int] = {}
    for ev in tasks.events("PayoutCredited", chain.deployment.block_number, payee=address):
        by_task[ev.taskId] = by_task.get(ev.taskId, 0) + ev.amount  # type: ignore[attr-defined]
    owed = tasks.owed(address)
    before = chain.w3.eth.get_balance(address)
    claimed, gas = 0, 0
    if owed and not dry_run:
        with chain.lock:
            receipt = tasks.claim()
        claimed = receipt.event("Claimed").amount  # type: ignore[attr-defined]
        raw = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)  # type: ignore[arg-type]
        gas = int(raw["gasUsed"]) * int(raw["effectiveGasPrice"])
    after = chain.w3.eth.get_balance(address)
    if as_json:
        out = {
            "account": address, "owed_wei": owed, "claimed_wei": claimed, "gas_wei": gas, "balance_before_wei": before,
            "balance_after_wei": after, "payouts_by_task_wei": {str(t): w for t, w in sorted(by_task.items())},
        }  # fmt: skip
        typer.echo(json.dumps(out, indent=2))
        return
    for task_id, wei in sorted(by_task.items()):
        typer.echo(f"task {task_id}: payouts credited {eth(wei)}")
    if not owed:
        typer.echo(f"nothing to claim for {address}")
    elif dry_run:
        typer.echo(f"{address} is owed {eth(owed)}; run without --dry-run to claim it")
    else:
        typer.echo(f"claimed {eth(claimed)} for {address}; balance {eth(before)} -> {eth(after)} (gas {eth(gas)})")
