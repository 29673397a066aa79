"""The publisher's quick start, end to end across real processes: Anvil, 3 edges, the
cloud and a fleet of 8 vehicles (``launcher.stack``), then README's "Quick start:
publisher" block run verbatim by bash (``bmfl task encode-test-set``, ``publish``,
``watch --settled``, ``show --json``, ``claim --dry-run``). Then every payee claims with
``bmfl claim`` and its own key (each balance rises by exactly its credit less the gas of
its claim), the task's ledger shows everything claimed, ``bmfl audit --json`` passes, and
README's "Quick start: auditor" block, run verbatim, passes too (with re-execution)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from bmfl.task import TaskDraft, with_preset
from chain.anvil import dev_key
from launcher.cli import app
from launcher.stack import FIRST_EDGE, LocalStack
from launcher.task_cli import summary
from tooling import requires_anvil
from vehicle_client.accounts import fleet_accounts

pytestmark = [pytest.mark.slow, requires_anvil]

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
VEHICLES, SEED, EDGES = 8, 3, 3


def quickstart(user: str = "publisher") -> str:
    rest = README[README.index(f"<!-- {user}-quickstart -->") :]
    return re.search(r"```bash\n(.*?)```", rest, re.S).group(1)  # type: ignore[union-attr]


def bmfl(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bmfl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def bmfl_here(args: list[str], env: dict[str, str]) -> Result:
    """``bmfl`` run in this process (typer's runner, the same app, ``env`` as its
    environment): for the many short commands (``bmfl claim`` per payee, ``task show`` and
    ``list``), each of which as a process spends about 2 s importing before one request."""
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("publisher")
    with LocalStack(run_dir / "stack", edges=EDGES, vehicles=VEHICLES, seed=SEED, round_timeout_s=120) as stack:
        work, bin_dir = run_dir / "work", run_dir / "bin"
        work.mkdir()
        bin_dir.mkdir()
        (bin_dir / "bmfl").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m launcher.cli "$@"\n')
        (bin_dir / "bmfl").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k != "BMFL_KEY"} | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "BMFL_CLOUD_URL": stack.cloud.url, "BMFL_RPC_URL": stack.rpc_url, "BMFL_DEPLOYMENT": str(stack.deployment_file),
        }  # fmt: skip
        seen: list[dict] = []  # every distinct view of task 1 while the quick start runs
        done = threading.Event()
        poller = threading.Thread(target=_poll, args=(f"{stack.cloud.url}/tasks/1", seen, done), daemon=True)
        poller.start()
        run = subprocess.run(["bash", "-ec", quickstart()], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        done.set()
        poller.join()
        yield stack, work, env, run, seen


def _poll(url: str, seen: list[dict], done: threading.Event) -> None:
    """Record each new view of the task, every 0.5 s, from before it is published (so a
    running round is seen however late ``bmfl task watch`` starts on a loaded machine)."""
    with httpx.Client(timeout=10) as http:
        while not done.wait(0.5):
            try:
                response = http.get(url)
            except httpx.TransportError:  # a slow answer on a loaded machine: the next poll asks again
                continue
            if response.status_code == 200 and (not seen or response.json() != seen[-1]):
                seen.append(response.json())


RUNNING_ROUND_2 = (r"task 1 running: round 1/2 \(training round 2: \d/8 uploads\), accuracy 0\.\d{4}, flagged \d+, "
                   r"ε max (\d|—), ETA \d+ s, spent 0\.010000 ETH")


def test_the_quick_start_publishes_and_watches_the_task_to_its_end(published) -> None:
    stack, work, _, run, seen = published
    assert run.returncode == 0, run.stdout + run.stderr + stack.cloud.tail()
    assert "task 1 published: escrow 1.000000 ETH (1000000000000000000 wei)" in run.stdout
    assert "watch it: bmfl task watch 1" in run.stdout
    # watch's line for the running second round, as the poller saw it (watch itself may start
    # after that round on a loaded machine; when it saw it, its own line must match too)
    assert any(re.search(RUNNING_ROUND_2, summary(view)) for view in seen), [summary(v) for v in seen]
    if "task 1 running: round 1/2 (training round 2" in run.stdout:
        assert re.search(RUNNING_ROUND_2, run.stdout), run.stdout
    assert "task 1 finished — every payee settled: round 2/2" in run.stdout
    assert "is owed 0.000000 ETH" in run.stdout or "nothing to claim" in run.stdout  # the publisher is owed nothing
    view = json.loads((work / "task.json").read_text())
    assert view["status"] == "finished" and view["rounds_finished"] == 2
    # published without --preset: the file over the private preset, σ planned for every size (no plan_samples)
    expected = TaskDraft.model_validate(with_preset("private", tomllib.loads((work / "task.toml").read_text())))
    assert {k: view["spec"][k] for k in ("model", "training", "aggregation")} == json.loads(
        expected.model_dump_json(include={"model", "training", "aggregation"}))
    assert view["spec"]["training"]["plan_samples"] is None and view["spec"]["training"]["target_epsilon"] == 8.0
    assert [r["selected"] for r in view["rounds"]] == [VEHICLES, VEHICLES] == [r["received"] for r in view["rounds"]]
    assert all(r["started_at"] < r["finished_at"] for r in view["rounds"])
    times = view["times"]
    assert times["escrowed_at"] <= times["first_round_started_at"] + 5 and times["finished_at"] <= times["settle_after"]
    assert view["eta_s"] == 0 and view["current"] is None


def test_every_payee_claims_exactly_its_credit(published) -> None:
    stack, work, env, run, _ = published
    assert run.returncode == 0, run.stderr
    ledger = json.loads((work / "task.json").read_text())["ledger"]
    escrow = ledger["escrow_wei"]
    assert ledger["block_rewards_wei"] == 2 * 10**16
    assert ledger["block_rewards_wei"] + ledger["payouts_wei"] + ledger["escrow_left_wei"] == escrow
    assert 0 <= ledger["escrow_left_wei"] < 100  # flooring dust
    assert ledger["gas_wei"] > 0 and ledger["transactions"] >= 10
    keys = {a.address: "0x" + a.key.hex().removeprefix("0x") for a in fleet_accounts(SEED, VEHICLES)}
    keys |= {acct: key for key in (dev_key(FIRST_EDGE + i) for i in range(EDGES)) for acct in [_address(key)]}
    payees = ledger["payees"]
    assert {p["role"] for p in payees} == {"edge", "vehicle"} and len([p for p in payees if p["role"] == "vehicle"]) >= 1
    for p in payees:
        assert p["outstanding_wei"] == p["credited_wei"] and p["claimed_wei"] == 0
        out = bmfl_here(["claim", "--json"], env | {"BMFL_KEY": keys[p["payee"]]})
        assert out.exit_code == 0, out.output
        claim = json.loads(out.stdout)
        assert claim["account"] == p["payee"] and claim["claimed_wei"] == claim["owed_wei"] == p["credited_wei"]
        assert claim["balance_after_wei"] == claim["balance_before_wei"] + p["credited_wei"] - claim["gas_wei"]
        again = bmfl_here(["claim"], env | {"BMFL_KEY": keys[p["payee"]]})
        assert again.exit_code == 0 and "nothing to claim" in again.stdout, again.output
    after = json.loads(bmfl_here(["task", "show", "1", "--json"], env).stdout)["ledger"]
    assert all(p["outstanding_wei"] == 0 and p["claimed_wei"] == p["credited_wei"] for p in after["payees"])
    assert after["claimed_wei"] == ledger["block_rewards_wei"] + ledger["payouts_wei"] and after["outstanding_wei"] == 0


def test_the_audit_passes_and_the_list_shows_the_task(published) -> None:
    stack, work, env, run, _ = published
    assert run.returncode == 0, run.stderr
    audit = bmfl(["audit", "--task", "1", "--rpc", stack.rpc_url, "--deployment", str(stack.deployment_file),
                  "--gateway", stack.cloud.url, "--json"], work, env)  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["passed"] is True
    listed = json.loads(bmfl_here(["task", "list", "--json"], env).stdout)
    assert [(t["task_id"], t["status"]) for t in listed] == [(1, "finished")]
    shown = bmfl_here(["task", "show", "1"], env).stdout
    assert "round 2: accuracy" in shown and "uploads 8/8" in shown and "claimed" in shown


def test_the_auditors_quick_start_passes_after_the_publishers(published) -> None:
    stack, work, env, run, _ = published
    assert run.returncode == 0, run.stderr
    audit = subprocess.run(["bash", "-ec", quickstart("auditor")], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert "audit passed" in audit.stdout and json.loads((work / "audit.json").read_text())["passed"] is True
    assert re.search(r"\b1\s.*finished", audit.stdout)  # bmfl chain tasks lists the task


def _address(key: str) -> str:
    from eth_account import Account

    return Account.from_key(key).address
