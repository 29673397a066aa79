"""``bmfl task``: the publisher's commands. ``publish`` checks the task (locally and with the
cloud's dry run ``POST /tasks/validate``) before it escrows anything, then escrows the
reward with ``createTask`` and uploads the task; ``list``, ``show`` and ``watch`` read the
cloud (``--json`` for scripts); ``cancel`` and ``refund`` get the escrow of a stalled
or orphaned task back; ``encode-test-set`` writes a test set's canonical bytes."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from pydantic import ValidationError

from launcher.account import CloudUrl, Deployment, Json, KeyFile, RpcUrl, connect_account, eth, fail
from launcher.refund import refund_command

task_app = typer.Typer(help="Publish and follow tasks (the publisher's commands).", no_args_is_help=True)
task_app.command("refund")(refund_command)
DONE = ("finished", "cancelled", "failed")


def load_spec(path: Path, reward_wei: Optional[int], preset: Optional[str] = None):  # -> TaskDraft
    """A TaskDraft from a TOML or JSON file (``bmfl.task.TaskDraft``'s fields; unknown
    fields are errors) over ``preset`` (``bmfl.task.PRESETS``) when one is named;
    ``reward_wei`` overrides the file's."""
    from bmfl.task import TaskDraft, with_preset

    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if reward_wei is not None:
        data["reward_wei"] = reward_wei
    return TaskDraft.model_validate(with_preset(preset, data) if preset else data)


def get_json(url: str) -> Any:
    try:
        reply = httpx.get(url, timeout=30)
    except httpx.HTTPError as exc:
        raise fail(f"GET {url}: {exc}", 1) from None
    if reply.status_code != 200:
        body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        raise fail(f"GET {url}: HTTP {reply.status_code} {body.get('reason', '')} {body.get('detail', reply.text[:300])}", 1)
    return reply.json()


@task_app.command()
def publish(
    spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="task spec, TOML or JSON (fields of bmfl.task.TaskDraft)"),
    test_set: Path = typer.Option(..., "--test-set", exists=True, dir_okay=False, help="test set file from `bmfl task encode-test-set` (sent byte for byte)"),
    initial_model: Optional[Path] = typer.Option(None, "--initial-model", exists=True, dir_okay=False, help="w⁰ as a safetensors blob (default: the model's seeded initialisation)"),
    reward_wei: Optional[int] = typer.Option(None, "--reward-wei", min=1, help="escrow ρ_total in wei (default: the spec's reward_wei)"),
    preset: str = typer.Option("private", "--preset", help="the named preset the file's fields override, key by key: private (the default: the best point measured at ε = 8 over 8 rounds, σ planned for every dataset size), private_long (ε = 8 over tens of rounds), private_leave_out (private with each upload's contribution judged at the edge's full step: stronger against attackers who know the defence where vehicles hold a mix of classes, more honest vehicles flagged where they hold one or two), private_credit (private with each kept upload weighed and paid by the help the test set measures: label flipping, free riders and the white-box attacker held where vehicles hold a mix of classes, a lower clean accuracy where they hold one or two), paper, or none (TaskDraft's own defaults)"),
    key_file: Optional[Path] = KeyFile, cloud_url: str = CloudUrl, rpc_url: str = RpcUrl, deployment: Optional[Path] = Deployment,
) -> None:  # fmt: skip
    """Validate the task (here and with the cloud's dry run), then escrow the reward on chain,
    then upload it; prints the task id and how to watch it. Nothing is escrowed unless
    every check passes."""
    from web3.exceptions import Web3Exception

    from bmfl.rounds.validate import TaskInvalid
    from chain.base import ContractRevert
    from launcher.publisher import PublishFailed, Publisher

    try:
        draft = load_spec(spec, reward_wei, None if preset == "none" else preset)
    except (ValidationError, ValueError, tomllib.TOMLDecodeError) as exc:
        over = f" over preset {preset} (--preset none: TaskDraft's own defaults)" if preset != "none" else ""
        raise fail(f"invalid_spec: {spec}{over}: {exc}\nnothing was escrowed") from None
    chain = connect_account(key_file, rpc_url, deployment)
    model_blob = initial_model.read_bytes() if initial_model is not None else None
    try:
        view = Publisher(chain, cloud_url).publish(draft, test_set.read_bytes(), model_blob, ask_cloud=True)
    except TaskInvalid as exc:
        lines = "\n".join(f"  {p.reason}: {p.detail}" for p in exc.problems)
        raise fail(f"the task is invalid; nothing was escrowed:\n{lines}") from None
    except PublishFailed as exc:
        raise fail(f"{exc}\nonce it stalls, `bmfl task refund --yes` returns the escrow", 1) from None
    except (httpx.HTTPError, RuntimeError) as exc:
        raise fail(f"{exc}\nnothing was escrowed", 1) from None
    except (ContractRevert, Web3Exception) as exc:  # e.g. a balance below the escrow
        raise fail(f"the chain refused createTask: {exc}\nnothing was escrowed", 1) from None
    task_id = view["task_id"]
    typer.echo(f"task {task_id} published: escrow {eth(draft.reward_wei)} by {chain.address}")
    typer.echo(f"watch it: bmfl task watch {task_id} --cloud-url {cloud_url}   (or GET {cloud_url.rstrip('/')}/tasks/{task_id})")


@task_app.command("list")
def list_tasks(cloud_url: str = CloudUrl, as_json: bool = Json) -> None:
    """The tasks the cloud runs: id, status, round, last accuracy, escrow."""
    tasks = get_json(f"{cloud_url.rstrip('/')}/tasks")
    if as_json:
        typer.echo(json.dumps(tasks, indent=2))
        return
    if not tasks:
        typer.echo("no tasks")
    for t in tasks:
        acc = f"{t['accuracy'][-1]:.4f}" if t["accuracy"] else "—"
        typer.echo(
            f"task {t['task_id']:>4}  {t['status']:<17} round {t['chain']['round']}/{t['chain']['max_rounds']}  "
            f"accuracy {acc}  escrow {eth(t['chain']['escrow_wei'])}  publisher {t['chain']['publisher']}"
        )


def summary(view: dict) -> str:
    """One line: status, round, accuracy, flagged, ε, ETA, spend."""
    acc = f"{view['accuracy'][-1]:.4f}" if view["accuracy"] else "—"
    flagged = sum(len(v) for v in view["flagged"].values())
    eps = f"{view['epsilon_max']:.2f}" if view["epsilon_max"] is not None else "—"
    eta = f"{view['eta_s']:.0f} s" if view.get("eta_s") is not None else "—"
    cur = view.get("current")
    live = f" (training round {cur['round']}: {cur['received']}/{cur['selected']} uploads)" if cur else ""
    line = (
        f"task {view['task_id']} {view['status']}{' — ' + view['detail'] if view['detail'] else ''}: "
        f"round {view['rounds_finished']}/{view['chain']['max_rounds']}{live}, accuracy {acc}, "
        f"flagged {flagged}, ε max {eps}, ETA {eta}"
    )
    if ledger := view.get("ledger"):
        spent = ledger["block_rewards_wei"] + ledger["payouts_wei"]
        line += f", spent {eth(spent)} of {eth(ledger['escrow_wei'])}, gas {eth(ledger['gas_wei'])}"
    return line


@task_app.command()
def show(task_id: int = typer.Argument(..., min=1), cloud_url: str = CloudUrl, as_json: bool = Json) -> None:
    """One task: summary, rounds (accuracy, leader, uploads), payees (credited, claimed, outstanding)."""
    view = get_json(f"{cloud_url.rstrip('/')}/tasks/{task_id}")
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(summary(view))
    for r in view["rounds"]:
        typer.echo(
            f"  round {r['round']}: accuracy {r['accuracy']:.4f}, leader edge {r['leader_edge']}, "
            f"uploads {r['received']}/{r['selected']}, flagged {r['flagged']}, {r['wall_time_s']:.1f} s"
        )
    for p in (view.get("ledger") or {}).get("payees", []):
        typer.echo(
            f"  {p['role']:<9} {p['payee']}  credited {eth(p['credited_wei'])}, claimed {eth(p['claimed_wei'])}, "
            f"outstanding {eth(p['outstanding_wei'])}"
        )


@task_app.command()
def watch(
    task_id: int = typer.Argument(..., min=1),
    cloud_url: str = CloudUrl,
    settled: bool = typer.Option(False, "--settled", help="after the finish, wait until every payee is settled"),
    interval: float = typer.Option(2.0, min=0.1, help="seconds between polls"),
    timeout: float = typer.Option(0.0, min=0, help="give up after this many seconds (0: never)"),
    as_json: bool = Json,
) -> None:
    """Follow a task live (one line per change: round, accuracy, flagged, ε, ETA, spend);
    exits 0 when it finished (and with --settled, once payouts are credited), 1 if it failed
    or was cancelled, 3 on timeout."""
    from cloud_aggregator.status import SETTLED

    url = f"{cloud_url.rstrip('/')}/tasks/{task_id}"
    deadline = time.monotonic() + timeout if timeout else None
    last = None
    while True:
        view = get_json(url)
        line = summary(view)
        if line != last:
            typer.echo(json.dumps(view) if as_json else line)
            last = line
        if view["status"] in DONE and (not settled or view["status"] != "finished" or view["detail"] == SETTLED):
            raise typer.Exit(0 if view["status"] == "finished" else 1)
        if deadline is not None and time.monotonic() > deadline:
            raise fail(f"task {task_id} is still {view['status']} after {timeout:.0f} s", 3)
        time.sleep(interval)


@task_app.command()
def cancel(
    task_id: int = typer.Argument(..., min=1),
    key_file: Optional[Path] = KeyFile, rpc_url: str = RpcUrl, deployment: Optional[Path] = Deployment,
) -> None:  # fmt: skip
    """cancelTask a stalled task (no step by its deadline plus a round duration): the unspent
    escrow is credited to its publisher, who withdraws it with `bmfl claim`."""
    from chain.base import ContractRevert
    from chain.tasks import Status

    chain = connect_account(key_file, rpc_url, deployment)
    info = chain.tasks.task(task_id)
    if info.status != Status.ACTIVE:
        raise fail(f"task {task_id} is {info.status.name.lower()}, not active")
    stall_at = info.deadline + info.round_duration
    now = max(int(chain.w3.eth.get_block("latest")["timestamp"]), int(time.time()))
    if now <= stall_at:
        raise fail(f"task {task_id} has not stalled: it may be cancelled after chain time {stall_at} ({stall_at - now} s from now)")
    try:
        with chain.lock:
            refund = chain.tasks.cancel_task(task_id).event("TaskCancelled").refund  # type: ignore[attr-defined]
    except ContractRevert as exc:
        raise fail(f"cancelTask reverted: {exc}", 1) from None
    typer.echo(f"task {task_id} cancelled: {eth(refund)} credited to {info.publisher}; withdraw it with `bmfl claim`")


@task_app.command("encode-test-set")
def encode_test_set_command(
    output: Path = typer.Argument(..., dir_okay=False, help="file to write (upload these exact bytes)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="a registered dataset's held-out split (bmfl.data), e.g. mnist"),
    source: Optional[Path] = typer.Option(None, "--from", exists=True, dir_okay=False, help="a safetensors file with tensors x and y"),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="keep the first ROWS examples"),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", min=1, help="classes of y (--from; omit for regression)"),
) -> None:
    """Write a test set in the canonical encoding (bmfl.protocol.testset.encode_test_set):
    the same data gives the same bytes and digest in any process. Prints the sha2-256."""
    import hashlib

    from bmfl.data.base import TensorData
    from bmfl.protocol.testset import TestSetError, decode_test_set, encode_test_set

    if (dataset is None) == (source is None):
        raise fail("give exactly one of --dataset and --from")
    if dataset is not None:
        from bmfl.data import load_dataset

        data = load_dataset(dataset)[1]
    else:
        from safetensors.torch import load as st_load

        tensors = st_load(source.read_bytes())  # type: ignore[union-attr]
        if set(tensors) != {"x", "y"}:
            raise fail(f"{source} must hold exactly the tensors x and y, has {sorted(tensors)}")
        data = TensorData(tensors["x"], tensors["y"], num_classes)
    if rows is not None:
        data = data.subset(list(range(min(rows, len(data.x)))))
    blob = encode_test_set(data)
    try:
        decode_test_set(blob)  # what the edges will check
    except TestSetError as exc:
        raise fail(f"not a valid test set: {exc}") from None
    output.write_bytes(blob)
    typer.echo(f"{output}: {len(data.x)} examples, {len(blob)} bytes, sha2-256 0x{hashlib.sha256(blob).hexdigest()}")
