"""The demo's default training point (issue 22, item 4), chosen by measurement: the
simulator in `bmfl demo`'s setting (MNIST-10k dealt Dirichlet(0.9) by the demo's seed,
50 vehicles, 5 edges, 8 rounds, 10 % sign-flip attackers, the task's default edge
method) runs the demo's former default and candidates from docs/frontier.md at a target
ε, on several seeds. Writes docs/demo_defaults.md from the runs' own records.

    .venv/bin/python bench/demo_defaults.py run today adam_gn --seeds 0 1 2   # one at a time
    .venv/bin/python bench/demo_defaults.py render                             # docs/demo_defaults.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from bmfl.data import load_dataset
from bmfl.partition import make_partition
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.output import write_outputs
from bmfl.task import PRESETS, TrainingSpec
from bmfl.training.local import round_plan

RUNS = Path("runs/demo_defaults")
OUT = Path("docs/demo_defaults.md")
RECORDS = Path("docs/demo_defaults.json")
"""Every rendered run's record (:func:`record`), so a later render keeps runs made on other machines."""
EPSILON = 8.0
"""The stated budget: ε at δ = 1e-5 each vehicle may spend over the demo's rounds."""
ROUNDS, VEHICLES, EDGES = 8, 50, 5
FRONTIER = {"epochs": 1, "lr": 0.3, "momentum": 0.5}  # docs/frontier.md's local training
ADAM = {"name": "fedadam", "lr": 0.01}
AVGM9 = {"name": "fedavgm", "lr": 1.0, "beta1": 0.9}
# the DP noise of a small expected batch moves scatter_linear's small initial weights by a relative squared distance
# of 30 to 150 in round 1: the self-reliability filter that takes the noise out of D keeps those vehicles
SCATTER_FILTERS = [{"name": "dp_envelope"}, {"name": "dp_self_reliability"}]
PRIVATE_TRAINING = {k: v for k, v in PRESETS["private"]["training"].items() if k != "target_epsilon"}
PRIVATE_AGGREGATION = PRESETS["private"]["aggregation"]
# name → (training, aggregation, model); "today" is the demo's former TrainingSpec(epochs=2) at σ = 1
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "today": ({"epochs": 2}, {"server": {"name": "paper"}}, "bmfl_cnn"),
    "e2b64": ({"epochs": 2}, {"server": {"name": "paper"}}, "bmfl_cnn"),
    "b64s3_avgm": ({**FRONTIER, "max_steps": 3}, {"server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.5}}, "bmfl_cnn"),
    "b256s1_adam": ({**FRONTIER, "batch_size": 256, "max_steps": 1}, {"server": ADAM}, "bmfl_cnn"),
    "b256s1_adam_gn": ({**FRONTIER, "batch_size": 256, "max_steps": 1}, {"server": ADAM}, "bmfl_cnn_gn"),
    "scatter_b64s3_avgm9": ({**FRONTIER, "lr": 0.6, "max_steps": 3}, {"server": AVGM9, "filters": SCATTER_FILTERS}, "scatter_linear"),
    "scatter_q25_b64s3_avgm9": ({**FRONTIER, "lr": 0.6, "max_steps": 3, "max_sampling_rate": 0.25},
                                {"server": AVGM9, "filters": SCATTER_FILTERS}, "scatter_linear"),
    # the same filters, then plain averaging at the edges instead of reweighting
    "scatter_q25_b64s3_avgm9_avg": ({**FRONTIER, "lr": 0.6, "max_steps": 3, "max_sampling_rate": 0.25},
                                    {"server": AVGM9, "filters": SCATTER_FILTERS, "edge": {"name": "fedavg"}}, "scatter_linear"),
    # the private preset as it stands (its edges: envelope, signal median, dp_self_reliability, noise_weighted), and
    # with the cloud's step decayed over the rounds (cosine, docs/algorithms.md §4.1)
    "private": (PRIVATE_TRAINING, {**PRIVATE_AGGREGATION, "edge": {"name": "noise_weighted"}}, "scatter_linear"),
    "private_cos": (PRIVATE_TRAINING, {**PRIVATE_AGGREGATION, "edge": {"name": "noise_weighted"},
                                       "server": {**PRIVATE_AGGREGATION["server"], "schedule": "cosine"}}, "scatter_linear"),
    # one DP-SGD step a round (σ derived for a third of the steps), B = 256, as the 80-round frontier's best
    "private_s1": ({**PRIVATE_TRAINING, "max_steps": 1, "batch_size": 256},
                   {**PRIVATE_AGGREGATION, "edge": {"name": "noise_weighted"}}, "scatter_linear"),
    "private_s1_cos": ({**PRIVATE_TRAINING, "max_steps": 1, "batch_size": 256},
                       {**PRIVATE_AGGREGATION, "edge": {"name": "noise_weighted"},
                        "server": {**PRIVATE_AGGREGATION["server"], "schedule": "cosine"}}, "scatter_linear"),
}


def config(name: str, seed: int, eps: float) -> SimulationConfig:
    """The run ``name`` on ``seed``, σ derived from ``eps`` (``today``: σ = 1 as stated)."""
    training, aggregation, model = SETTINGS[name]
    training = dict(training) if name == "today" else {**training, "target_epsilon": eps}
    return SimulationConfig.model_validate({
        "name": f"{name}_eps{eps:g}_s{seed}" if name != "today" else f"today_s{seed}", "seed": seed,
        "rounds": ROUNDS, "vehicles": VEHICLES, "edges": EDGES, "model": model,
        "data": {"name": "mnist"}, "partition": {"kind": "dirichlet", "options": {"alpha": 0.9}},
        "attack": {"name": "sign_flip", "fraction": 0.1}, "training": training,
        "aggregation": aggregation,
    })  # fmt: skip


def work(cfg: dict[str, Any]) -> float:
    """Samples a round puts through DP-SGD, expected, over all vehicles (steps × q·n
    each): the training cost a setting sets, free of the machine's load."""
    train, _ = load_dataset(cfg["data"]["name"])
    partition = make_partition(cfg["partition"]["kind"], train.y, cfg["vehicles"], cfg["seed"], **cfg["partition"]["options"])
    local = TrainingSpec.model_validate(cfg["training"]).local()
    return sum(p.steps * p.sampling_rate * n for n, p in ((n, round_plan(local, n)) for n in partition.sizes))


def record(folder: Path) -> dict[str, Any]:
    """One run's figures, from its config.json and metrics.jsonl."""
    cfg = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    t = cfg["training"]
    return {
        "setting": folder.name.rsplit("_s", 1)[0], "seed": cfg["seed"], "target": t.get("target_epsilon"),
        "sigma": t["noise_multiplier"], "B": t["batch_size"], "E": t["epochs"], "steps": t["max_steps"],
        "qmax": t.get("max_sampling_rate", 1.0),
        "lr": t["lr"], "momentum": t["momentum"], "model": cfg["model"], "server": cfg["aggregation"]["server"],
        "final": rows[-1]["accuracy"], "epsilon": rows[-1]["epsilon_max"], "wall": sum(r["wall_time_s"] for r in rows),
        "compute": sum(r["compute_s_vehicles"] for r in rows), "work": work(cfg),
    }  # fmt: skip


def _mean_sd(values: list[float], digits: int) -> str:
    """mean ± sd over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _server(server: dict[str, Any]) -> str:
    if server["name"] == "paper":
        return "paper"
    schedule = f", {server['schedule']}" if server.get("schedule", "constant") != "constant" else ""
    return f"{server['name']} η={server['lr']:g}" + (f" β₁={server['beta1']:g}" if server["name"] == "fedavgm" else "") + schedule


def mean(rs: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(r[key] for r in rs)


def _choice(settings: dict[str, list[dict[str, Any]]]) -> str:
    """The stated rule: of the settings whose every seed spent at most the target, the
    best mean final accuracy among those that train no more samples than ``today``."""
    within = {n: rs for n, rs in settings.items() if rs[0]["target"] is not None and all(r["epsilon"] <= r["target"] for r in rs)}
    if not within:
        return "**Choice**: no setting ran within its target yet."
    best = max(within, key=lambda n: mean(within[n], "final"))
    fast = {n: rs for n, rs in within.items() if "today" not in settings or mean(rs, "work") <= mean(settings["today"], "work")}
    pick = max(fast or within, key=lambda n: mean((fast or within)[n], "final"))
    slower = "" if pick == best else f" (`{best}` scores higher but trains more samples than `today`)"
    return (
        f"**Choice** (best mean final accuracy within the target, training no more samples than `today`): `{pick}`{slower}, "
        f"{mean(within[pick], 'final'):.4f} at ε ≤ {within[pick][0]['target']:g}; the `private` preset in `bmfl/task.py`."
    )


def render(runs: Path, out: Path, stored: Path = RECORDS) -> None:
    """docs/demo_defaults.md: one row per setting (mean ± sd over its seeds), then per seed; from the records kept in
    ``stored`` and the runs under ``runs`` (a run replaces the stored record of its setting and seed), all of
    which are then kept in ``stored``."""
    known = {(r["setting"], r["seed"]): r for r in (json.loads(stored.read_text()) if stored.exists() else [])}
    if runs.exists():
        known |= {(r["setting"], r["seed"]): r for r in (record(f) for f in runs.iterdir() if (f / "metrics.jsonl").exists())}
    records = sorted(known.values(), key=lambda r: (r["setting"], r["seed"]))
    stored.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    settings: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        settings.setdefault(r["setting"], []).append(r)
    lines = [
        "# The demo's default (issue 22; generated by `bench/demo_defaults.py render`)", "",
        (
            f"The simulator in `bmfl demo`'s setting: MNIST-10k dealt Dirichlet(0.9) to {VEHICLES} vehicles, {EDGES} edges, "
            f"{ROUNDS} rounds, 10 % sign-flip attackers; at the edges self-reliability then reweighting for the CNN "
            "settings (run before the DP envelope became the default), and the DP envelope, then `dp_self_reliability` "
            "(self-reliability with the DP noise taken out of its distance), then reweighting for the `scatter_` "
            "settings, and the `private` preset's edges (the DP envelope, the signal median flagging only, "
            "`dp_self_reliability`, then `noise_weighted`) for the `private` settings; FedAvg at the cloud "
            "then the server optimiser listed; C = 1, δ = 1e-5. σ is derived from the target ε for the run's rounds and "
            "the vehicles' sizes (docs/algorithms.md §1.2); q_max caps each sample's chance to be in a batch "
            "(§1.4); `today` is the demo's former TrainingSpec(epochs=2) at σ = 1. "
            "ε is the largest any vehicle spent on training (RDP; the demo's vehicles also spend a little on their noisy "
            "sample count). Wall time is the simulator's, summed over rounds, on a shared 2-core machine (one torch "
            "thread; other jobs ran beside it, so it varies by up to 2×); training s is the vehicles' training time "
            "alone, summed over trainers and rounds; samples/round is what DP-SGD trains on per round, expected, over all "
            "vehicles (steps × q·n each), the load-free cost the choice compares. Each "
            "setting: `bench/demo_defaults.py run NAME --seeds 0 1 2` (`--eps E` for the target), then `render`, which "
            "keeps every run's record in docs/demo_defaults.json (runs made on other machines stay in the table)."
        ), "",
        "| setting | target ε | σ | E | B | q_max | steps/round | η | β | model | server | seeds | final accuracy | ε spent | wall s | training s | samples/round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, rs in settings.items():
        r = rs[0]
        target = "—" if r["target"] is None else f"{r['target']:g}"
        steps = "E epochs" if r["steps"] is None else r["steps"]
        lines.append(
            f"| {name} | {target} | {r['sigma']:.3f} | {r['E']} | {r['B']} | {r.get('qmax', 1.0):g} | {steps} | {r['lr']:g} | "
            f"{r['momentum']:g} | "
            f"{r['model']} | {_server(r['server'])} | {len(rs)} | {_mean_sd([x['final'] for x in rs], 4)} | "
            f"{_mean_sd([x['epsilon'] for x in rs], 2)} | {_mean_sd([x['wall'] for x in rs], 0)} | "
            f"{_mean_sd([x['compute'] for x in rs], 0)} | {_mean_sd([x['work'] for x in rs], 0)} |"
        )  # fmt: skip
    lines += ["", _choice(settings), "", "Per seed:", "", "| setting | seed | final accuracy | ε spent | wall s | training s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['seed']} | {r['final']:.4f} | {r['epsilon']:.2f} | {r['wall']:.0f} | {r['compute']:.0f} |"
              for r in records]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "render"))
    parser.add_argument("names", nargs="*", help="settings to run, one after another")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eps", type=float, default=EPSILON)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.action == "render":
        render(args.runs, args.out)
        return
    unknown = [n for n in args.names if n not in SETTINGS]
    if unknown or not args.names:
        parser.error(f"name one or more settings of {list(SETTINGS)} (unknown: {unknown})")
    console = Console()
    for name in args.names:
        for seed in args.seeds:
            cfg = config(name, seed, args.eps).model_copy(update={"output_dir": str(args.runs)})
            write_outputs(run_simulation(cfg, console), args.runs / cfg.name)


if __name__ == "__main__":
    main()
