"""Asynchronous vs synchronous rounds through the real services (issue 20): per seed, one
stack on loopback (``launcher.stack.LocalStack``: Anvil, the edges and the cloud as
processes) and one fleet in this process, whose vehicles follow the simulator's compute
model (``FleetSettings.stragglers``, kind ``slow_fraction``: 30 % of them 5× slower;
each upload waits until its job's modelled compute time, work × ``seconds_per_sample``
× slowdown, has passed since its training started). MNIST dealt Dirichlet(0.9), DP-SGD
at a fixed σ, the default edge pipeline, a 1,000-image test set.

The synchronous task runs ``--rounds`` rounds; its final accuracy A is the target. The
asynchronous task (FedBuff weighting, S = ``--buffer``, τ_max = ``--tau-max``) is
published with ``target_accuracy`` = A and stops on chain once a version reaches it.
Time to A runs from the first round's opening to the finalization of the first round at
or above A, read from the cloud's round records. Printed per seed: both times, the
ratio async / sync, and the stale reports; the accuracy-over-time plot goes to ``--plot``.

    python -m bench.async_services [--seeds 0 1 2] [--vehicles 20] [--edges 3] [--rounds 8] [--buffer 10]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from web3 import Web3

from bench.common import console
from bmfl.data import load_dataset
from bmfl.simulation.config import StragglerConfig
from bmfl.task import AsyncSpec, TaskDraft, TrainingSpec
from chain.anvil import dev_key
from chain.deploy import Deployment
from chain.tasks import TasksClient
from launcher.stack import OPERATOR, LocalStack, run_task
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

TRAINING = TrainingSpec(epochs=1, max_steps=3, lr=0.3, momentum=0.5, noise_multiplier=1.0)
TEST_IMAGES = 1000


def time_to(view: dict, target: float) -> float | None:
    """Seconds from round 1's opening to the first finalized round with accuracy ≥ ``target``."""
    rounds = view["rounds"]
    reached = next((r for r in rounds if r["accuracy"] >= target), None)
    return None if reached is None else reached["finished_at"] - rounds[0]["started_at"]


def staleness(stack: LocalStack, task_id: int) -> Counter[int]:
    """τ → reports recorded on chain with that staleness."""
    deployment = Deployment.model_validate_json(stack.deployment_file.read_text())  # type: ignore[union-attr]
    tasks = TasksClient(Web3(Web3.HTTPProvider(stack.rpc_url)), deployment.tasks)
    return Counter(rec.staleness for r in tasks.recorded_rounds(task_id, deployment.block_number) for rec in r.decoded())


def mean_step_s(view: dict) -> float:
    """Mean seconds between consecutive finalized rounds (the first from its opening)."""
    rounds = view["rounds"]
    return (rounds[-1]["finished_at"] - rounds[0]["started_at"]) / len(rounds)


def plot(runs: dict[int, dict[str, dict]], setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for (seed, views), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for mode, view in views.items():
            t0 = view["rounds"][0]["started_at"]
            xs = [r["finished_at"] - t0 for r in view["rounds"]]
            ax.plot(xs, [r["accuracy"] for r in view["rounds"]], marker="o" if mode == "sync" else ".", color=colour,
                    linestyle="-" if mode == "sync" else "--", label=f"{mode}, seed {seed}")  # fmt: skip
    ax.set_xlabel("wall-clock seconds since round 1 opened (each point: a finalized round / version)")
    ax.set_ylabel("global test accuracy")
    ax.set_title(setting.replace("; ", "\n"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--vehicles", type=int, default=20)
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--buffer", type=int, default=10)
    ap.add_argument("--tau-max", type=int, default=4)
    ap.add_argument("--seconds-per-sample", type=float, default=0.02)
    ap.add_argument("--plot", type=Path, default=Path("docs/results/async_services.png"))
    args = ap.parse_args()
    stragglers = StragglerConfig(kind="slow_fraction", seconds_per_sample=args.seconds_per_sample)
    train, test = load_dataset("mnist")
    test = test.subset(list(range(TEST_IMAGES)))
    setting = (
        f"{args.vehicles} vehicles, {args.edges} edges, {stragglers.slow_fraction:.0%} {stragglers.slowdown:g}× slower, "
        f"MNIST Dirichlet(0.9), DP σ = {TRAINING.noise_multiplier}; sync {args.rounds} rounds vs async "
        f"FedBuff S = {args.buffer}, τ_max = {args.tau_max}"
    )
    console.rule(f"async vs sync through the services: {setting}")
    runs: dict[int, dict[str, dict]] = {}
    ratios = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="bmfl-async-") as tmp, LocalStack(Path(tmp), edges=args.edges) as stack:
            fleet = Fleet(FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=args.vehicles, seed=seed, epsilon_budget=math.inf,
                stragglers=stragglers, poll_interval_s=0.2,
            ), train_data=train, console=Console(quiet=True))  # fmt: skip
            try:
                fleet.setup()
                console.log(f"seed {seed}: stack up, {args.vehicles} vehicles registered")
                base = {"seed": seed, "challenge_period_s": 0, "training": TRAINING}
                _, sync = run_task(stack, fleet, TaskDraft(rounds=args.rounds, **base), test, timeout_s=3600)
                target = sync["accuracy"][-1]
                console.log(f"seed {seed}: sync finished {sync['rounds_finished']} rounds at accuracy {target:.4f}")
                asynchrony = AsyncSpec(mode="async", buffer_size=args.buffer, tau_max=args.tau_max, weighting="fedbuff")
                draft = TaskDraft(rounds=args.rounds * 4, target_accuracy=target, asynchrony=asynchrony, **base)
                task_id, asynchronous = run_task(stack, fleet, draft, test, timeout_s=3600)
                taus = staleness(stack, task_id)
                console.log(f"seed {seed}: async finished {asynchronous['rounds_finished']} versions")
            finally:
                fleet.close()
        runs[seed] = {"sync": sync, "async": asynchronous}
        t_sync, t_async = time_to(sync, target), time_to(asynchronous, target)
        ratio = None if t_async is None or t_sync is None else t_async / t_sync
        ratios.append(ratio)
        best = max(asynchronous["accuracy"], default=0.0)
        console.print(
            f"seed {seed}: target {target:.4f}; sync {t_sync:.1f} s ({sync['rounds_finished']} rounds); async "
            f"{'not reached' if t_async is None else f'{t_async:.1f} s'} ({asynchronous['rounds_finished']} versions, "
            f"best {best:.4f}; reports by τ {dict(sorted(taus.items()))}); async/sync "
            f"{'—' if ratio is None else f'{ratio:.2f}'}; mean round {mean_step_s(sync):.1f} s, version "
            f"{mean_step_s(asynchronous):.1f} s; load {os.getloadavg()[0]:.1f}"
        )
    plot(runs, setting, args.plot)
    reached = [r for r in ratios if r is not None]
    summary = f"{min(reached):.2f}–{max(reached):.2f}" if reached else "—"
    console.print(f"async / sync time to the sync run's final accuracy over {len(ratios)} seeds: {summary} "
                  f"({len(reached)} reached); plot {args.plot}")  # fmt: skip


if __name__ == "__main__":
    main()
