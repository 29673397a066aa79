"""The accuracy–ε frontier (issue 22): BMFL's setting (MNIST-10k dealt complete non-IID
or Dirichlet(0.9), 50 vehicles, 5 edges, BMFL's edge method) at a target ε with σ
derived from it (``training.target_epsilon``, docs/algorithms.md §1.2), against today's
reproduction point (σ = 2, ``bmfl.reproduce.grid.BMFL_TRAINING``) and the non-private
ceiling. Writes docs/frontier.md (and docs/results/frontier.png) from the runs' own
records (config.json + metrics.jsonl), so the tables state what ran.

The ``nodp_`` settings are the same setting without DP (``training.dp = false``): the
ceiling the frontier is measured against; ``render-ceiling`` writes docs/ceiling.md (and
docs/results/ceiling.png) from those runs alone.

    .venv/bin/python bench/frontier.py run scatter_q10_avgm5 --eps 8 --rounds 80 --seed 1   # one at a time
    .venv/bin/python bench/frontier.py run scatter_q25_avgm9 --eps 4 --rounds 80 --partition dirichlet
    .venv/bin/python bench/frontier.py run scatter_q10_avgm5 --eps 8 --rounds 80 --attack sign_flip --attack-fraction 0.6
    .venv/bin/python bench/frontier.py render                                 # docs/frontier.md
    .venv/bin/python bench/frontier.py run b64s3 --quick                      # minutes: mnist_5k, 10 vehicles, 2 rounds
    .venv/bin/python bench/frontier.py run nodp_b64s3_avgm9_gn --rounds 80 --seed 1   # no DP: NAME_r80_s1
    .venv/bin/python bench/frontier.py render-ceiling                         # docs/ceiling.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from bmfl.plots import accuracy_axis, band, legend_outside, round_axis
from bmfl.reproduce.grid import BMFL_METHODS, BMFL_TRAINING, COMPLETE_NON_IID, DIRICHLET, NO_DP_LR
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.output import write_outputs
from bmfl.task import PRESETS, AggregationSpec

RUNS = Path("runs/frontier")
OUT = Path("docs/frontier.md")
CEILING = Path("docs/ceiling.md")
CEILING_PLOT = Path("docs/results/ceiling.png")
FRONTIER_PLOT = Path("docs/results/frontier.png")
PARTITIONS = {"complete": COMPLETE_NON_IID, "dirichlet": DIRICHLET}
AVGM5, AVGM9 = ({"name": "fedavgm", "lr": 1.0, "beta1": b} for b in (0.5, 0.9))
AVGM5_COS, AVGM9_COS = ({**server, "schedule": "cosine"} for server in (AVGM5, AVGM9))
# the DP noise of a small expected batch moves scatter_linear's small initial weights by a relative squared distance
# of 30 to 150 in round 1: BMFL's filter with the noise taken out of D (dp_self_reliability) keeps those vehicles
SCATTER = {"model": "scatter_linear", "filters": [{"name": "dp_self_reliability", "options": {"tolerance": 1.0}}]}
CAPPED = {"name": "fedavg", "options": {"cap": "median"}}
PRECISION = {"name": "noise_weighted"}
NODP = "nodp_"  # settings without DP: training over BMFL_TRAINING with dp = false and η = NO_DP_LR
# Training and cloud settings explored at a target ε (σ derived); "today" keeps σ = 2.
SETTINGS: dict[str, dict[str, Any]] = {
    "today": {},
    "b64s3": {"training": {}},
    "b256s1": {"training": {"batch_size": 256, "max_steps": 1}},
    "b128s2": {"training": {"batch_size": 128, "max_steps": 2}},
    "b64s3_avgm": {"training": {}, "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.5}},
    "b256s1_avgm": {"training": {"batch_size": 256, "max_steps": 1}, "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.5}},
    "b256s1_adam": {"training": {"batch_size": 256, "max_steps": 1}, "server": {"name": "fedadam", "lr": 0.01}},
    "b256s1_adam_gn": {"training": {"batch_size": 256, "max_steps": 1}, "server": {"name": "fedadam", "lr": 0.01},
                       "model": "bmfl_cnn_gn"},
    "scatter_q25_avgm9": {"training": {"lr": 0.6, "max_sampling_rate": 0.25}, "server": AVGM9, **SCATTER},
    "scatter_q10_avgm5": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER},
    # the same behind the DP envelope, as the private preset's edges run it
    "scatter_q10_avgm5_env": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                              "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]]},
    # the same filters with plain averaging at the edges instead of reweighting
    "scatter_q10_avgm5_env_avg": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                  "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": {"name": "fedavg"}},
    # the same filters, then averaging with each declared size capped at the median (the default edge rule)
    "scatter_q10_avgm5_env_cap": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                  "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": CAPPED},
    "scatter_q10_avgm5_env_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                 "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": PRECISION},
    # the signal median between the envelope and the self-reliability filter (docs/algorithms.md §8.4)
    "scatter_q10_avgm5_env_sm_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                    "filters": [{"name": "dp_envelope"}, {"name": "signal_median"}, *SCATTER["filters"]],
                                    "edge": PRECISION},
    "scatter_q10_avgm5_env_smflag_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                        "filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False}},
                                                    *SCATTER["filters"]], "edge": PRECISION},
    # the default pipeline on the Dirichlet frontier's best training (scatter_q25_avgm9)
    "scatter_q25_avgm9_env_smflag_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.25}, "server": AVGM9, **SCATTER,
                                        "filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False}},
                                                    *SCATTER["filters"]], "edge": PRECISION},
    "scatter_q25_avgm5_env_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.25}, "server": AVGM5, **SCATTER,
                                 "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": PRECISION},
    "scatter_q10_avgm9_env_nw": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM9, **SCATTER,
                                 "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": PRECISION},
    "scatter_q10_lr1_avgm5_env_nw": {"training": {"lr": 1.0, "max_sampling_rate": 0.1}, "server": AVGM5, **SCATTER,
                                     "filters": [{"name": "dp_envelope"}, *SCATTER["filters"]], "edge": PRECISION},
    # the same training with plain FedAvg at the edges (no filter): Fig. 5's and Fig. 6's baseline
    "scatter_q10_avgm5_fedavg": {"training": {"lr": 0.6, "max_sampling_rate": 0.1}, "server": AVGM5,
                                 "model": "scatter_linear", "filters": [], "edge": {"name": "fedavg"}},
}
SMFLAG_NW = {"filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False}}, *SCATTER["filters"]],
             "edge": PRECISION}


def _default_edges(server: dict[str, Any], **training: Any) -> dict[str, Any]:
    """A ``scatter_`` setting behind the default edges (``_env_smflag_nw``): η = 0.6 and q_max = 0.1 unless given."""
    return {"training": {"lr": 0.6, "max_sampling_rate": 0.1, **training}, "server": server, **SCATTER, **SMFLAG_NW}


# variations of scatter_q10_b256_avgm5cos_env_smflag_nw: batch, steps, local η, q_max, server momentum
SETTINGS |= {
    "scatter_q10_b1024_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, batch_size=1024),
    "scatter_q10_b256s5_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, batch_size=256, max_steps=5),
    "scatter_q10_b256s2_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, batch_size=256, max_steps=2),
    "scatter_q10_b256s1_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, batch_size=256, max_steps=1),
    "scatter_q10_b256s1_avgm5_env_smflag_nw": _default_edges(AVGM5, batch_size=256, max_steps=1),
    "scatter_q10_s1_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, max_steps=1),
    "scatter_q10_b256s1_lr1_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, lr=1.0, batch_size=256, max_steps=1),
    "scatter_q10_b256s2_lr1_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, lr=1.0, batch_size=256, max_steps=2),
    "scatter_q10_b256_lr04_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, lr=0.4, batch_size=256),
    "scatter_q15_b256_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, max_sampling_rate=0.15, batch_size=256),
    "scatter_q25_b256s1_avgm9cos_env_smflag_nw": _default_edges(AVGM9_COS, max_sampling_rate=0.25, batch_size=256, max_steps=1),
    "scatter_q10_b256_avgm9cos_env_smflag_nw": _default_edges(AVGM9_COS, batch_size=256),
    # the cosine step alone, then with B = 256 (q = 0.1 for every n ≤ 2,560: the planned q_max, so σ is unchanged,
    # while vehicles with n > 640 average their noise over larger batches)
    "scatter_q10_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS),
    "scatter_q10_b256_avgm5cos_env_smflag_nw": _default_edges(AVGM5_COS, batch_size=256),
}  # fmt: skip
# Without DP (the ceiling): training over BMFL_TRAINING with dp = false and η = NO_DP_LR unless stated.
SETTINGS |= {
    "nodp_e1": {"training": {"max_steps": None, "batch_size": 32, "momentum": 0.9}},
    "nodp_e1_lr01": {"training": {"max_steps": None, "batch_size": 32, "lr": 0.01, "momentum": 0.9}},
    "nodp_b64s3_avgm9": {"training": {}, "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.9}},
    "nodp_b64s5_avgm9": {"training": {"max_steps": 5}, "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.9}},
    "nodp_b64s3_avgm9_gn": {"training": {}, "server": {"name": "fedavgm", "lr": 1.0, "beta1": 0.9}, "model": "bmfl_cnn_gn"},
    "nodp_scatter_avgm9": {"training": {"lr": 0.01}, "server": AVGM9, **SCATTER},
    "nodp_scatter_avgm9_sr_avg": {"training": {"lr": 0.01}, "server": AVGM9, **SCATTER, "edge": {"name": "fedavg"}},
    "nodp_scatter_avgm9_sr_cap": {"training": {"lr": 0.01}, "server": AVGM9, **SCATTER, "edge": CAPPED},
    "nodp_scatter_avgm9_env_smflag_nw": {"training": {"lr": 0.01}, "server": AVGM9, **SCATTER, "edge": PRECISION,
                                         "filters": [{"name": "dp_envelope"}, {"name": "signal_median", "options": {"clip": False}},
                                                     *SCATTER["filters"]]},
    "nodp_scatter_avgm9_fedavg": {"training": {"lr": 0.01}, "server": AVGM9, "model": "scatter_linear", "filters": [],
                                  "edge": {"name": "fedavg"}},
}  # fmt: skip
# the `private` preset as a task gets it (the demo's training and edges), read from the preset itself
SETTINGS["private"] = {"training": PRESETS["private"]["training"], "model": PRESETS["private"]["model"],
                       "server": PRESETS["private"]["aggregation"]["server"],
                       "filters": PRESETS["private"]["aggregation"]["filters"], "edge": AggregationSpec().edge.model_dump()}
PRIVATE_LONG = "scatter_q10_b256s1_avgm5cos_env_smflag_nw"
"""The setting the ``private_long`` preset (bmfl/task.py) takes its fields from: the best at ε = 8 over 80 rounds."""
DEFAULT_EDGE = "noise_weighted"  # bmfl.task.AggregationSpec's edge rule
LAST = 3  # the table also gives the mean accuracy of the last LAST rounds
MIN_SEEDS = 3  # the best setting at a target is chosen among those run on this many seeds
CEILING_LAST = 5  # docs/ceiling.md: the mean of the last 5 rounds, as Fig. 6 reports
TARGET = 0.97  # issue 22: non-private, complete non-IID MNIST-10k, 80 rounds
FRONTIER_ROUNDS = 80  # docs/frontier.md: the length; shorter runs are exploration
REPRODUCTION = (45.09, 0.738)
"""Today's point where no `today` run is under the runs folder: ε spent and final accuracy of BMFL with DP after
80 rounds, complete non-IID, in the paper's reproduction (docs/results.md, Fig. 5)."""


def config(
    name: str, eps: float, rounds: int, quick: bool, seed: int = 0, partition: str = "complete",
    attack: str | None = None, fraction: float = 0.0, data: str = "mnist",
) -> SimulationConfig:
    """The run ``name`` at target ``eps`` (``today``: σ = 2 whatever ``eps``; ``nodp_``
    settings: no DP, ``eps`` unused), dealt by ``partition`` and trained with ``seed``,
    with a ``fraction`` of ``attack`` vehicles when one is named, on dataset ``data``
    (a registry name; runs on another than MNIST-10k carry it in their name)."""
    setting = SETTINGS[name]
    training = dict(BMFL_TRAINING)
    if name.startswith(NODP):
        training.update({"dp": False, "lr": NO_DP_LR}, **setting["training"])
    elif "training" in setting:
        training.pop("noise_multiplier")
        training.update(setting["training"], target_epsilon=eps)
    aggregation = {**BMFL_METHODS["BMFL"], "cloud": {"name": "fedavg"}, "server": setting.get("server", {"name": "paper"})}
    if "filters" in setting:
        aggregation["filters"] = setting["filters"]
    if "edge" in setting:
        aggregation["edge"] = setting["edge"]
    label = name if name == "today" else f"{name}_r{rounds}" if name.startswith(NODP) else f"{name}_eps{eps:g}"
    label += "" if data == "mnist" else f"_{data}"
    label += "" if partition == "complete" else f"_{partition}"
    label += f"_{attack}{round(fraction * 100)}" if attack else ""
    label += f"_s{seed}" if seed or name.startswith(NODP) else ""
    extra = {"attack": {"name": attack, "fraction": fraction}} if attack else {}
    return SimulationConfig.model_validate({
        "name": label, "seed": seed, "rounds": 2 if quick else rounds, "vehicles": 10 if quick else 50, "edges": 2 if quick else 5,
        "model": setting.get("model", "bmfl_cnn"), "data": {"name": "mnist_5k" if quick else data, "edge_test_samples": 200},
        "partition": PARTITIONS[partition], "training": training, "aggregation": aggregation, **extra,
    })  # fmt: skip


def _rule(spec: dict[str, Any]) -> str:
    """A rule's name with its options, ``fedavg(cap=median)``."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("options", {}).items()))
    return f"{spec['name']}({options})" if options else spec["name"]


def _default_rule(rs: list[dict[str, Any]]) -> bool:
    """The runs' edges end in the default edge rule (``noise_weighted``)."""
    return rs[0]["edge"].endswith(DEFAULT_EDGE)


def record(folder: Path, last: int = LAST) -> dict[str, Any]:
    """One run's row, from its config.json and metrics.jsonl."""
    cfg = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    t, server = cfg["training"], cfg["aggregation"].get("server", {"name": "paper"})
    acc = [r["accuracy"] for r in rows]
    attack = cfg.get("attack") or {}
    return {
        "run": folder.name, "rounds": len(rows), "dataset": cfg["data"]["name"],
        "data": f"{cfg['data']['name']}, {cfg['partition']['kind']}, {cfg['vehicles']} vehicles / {cfg['edges']} edges",
        "partition": cfg["partition"]["kind"], "attack": attack.get("name"), "fraction": attack.get("fraction", 0.0),
        "target": t.get("target_epsilon"), "qmax": t.get("max_sampling_rate", 1.0),
        "epsilon": rows[-1]["epsilon_max"], "sigma": t["noise_multiplier"], "B": t["batch_size"], "steps": t["max_steps"],
        "lr": t["lr"], "momentum": t["momentum"], "model": cfg["model"], "server": _server(server),
        "edge": " → ".join([f["name"] for f in cfg["aggregation"]["filters"]] + [_rule(cfg["aggregation"]["edge"])]),
        "final": acc[-1], "last": sum(acc[-last:]) / len(acc[-last:]), "flagged": sum(r["honest_flagged"] for r in rows),
        "attackers_flagged": sum(r["attackers_flagged"] for r in rows), "attacker_uploads": sum(r["attackers_selected"] for r in rows),
        "seed": cfg["seed"], "dp": t["dp"], "epochs": t["epochs"], "best": max(acc), "best_round": acc.index(max(acc)) + 1,
        "accuracy": acc, "wall_s": sum(r["wall_time_s"] for r in rows),
    }  # fmt: skip


def _server(server: dict[str, Any]) -> str:
    """``paper``, or the optimiser with its settings."""
    if server["name"] == "paper":
        return "paper"
    extra = f" β₂={server['beta2']:g} τ={server['tau']:g}" if server["name"] != "fedavgm" else ""
    extra += f", {server['schedule']}" if server.get("schedule", "constant") != "constant" else ""
    return f"{server['name']} η={server['lr']:g} β₁={server['beta1']:g}{extra}"


def setting_of(run: str) -> str:
    """``scatter_q25_avgm9_eps8`` of ``scatter_q25_avgm9_eps8_dirichlet_sign_flip60_s2``: the run without its
    partition, attack and seed."""
    run = run.rsplit("_s", 1)[0] if run.rsplit("_s", 1)[-1].isdigit() else run
    return run.split("_dirichlet")[0].split("_sign_flip")[0].split("_same_value")[0]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs grouped by (partition, setting, attack, fraction): their seeds together."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["partition"], setting_of(r["run"]), r["attack"], r["fraction"]), []).append(r)
    return out


def render(runs: Path, out: Path, plot: Path = FRONTIER_PLOT) -> None:
    """docs/frontier.md from every finished run of at least FRONTIER_ROUNDS rounds under ``runs``: per partition and
    target ε the best setting's final accuracy over its seeds, today's point, the non-private ceiling, the Fig. 6
    check (accuracy under attack over the same setting's clean run) and every run's hyperparameters."""
    rows = [r for r in records(runs, CEILING_LAST) if r["rounds"] >= FRONTIER_ROUNDS]
    groups = _groups(rows)
    clean = {k: v for k, v in groups.items() if v[0]["dp"] and not k[2]}
    lines = [
        "# The accuracy–ε frontier (issue 22; generated by `bench/frontier.py render`)", "",
        (
            f"MNIST-10k (8,000 training images dealt to 50 vehicles on 5 edges, the held-out 2,000 scored each round), "
            f"{FRONTIER_ROUNDS} rounds, every vehicle trains every round, BMFL's edge method (self-reliability, for the "
            "`scatter_` settings with the DP noise taken out of its distance, `dp_self_reliability`, tolerance 1; the "
            "`_env` settings put the DP envelope in front, as the `private` preset does; then reweighting, except: "
            "`_nw` averages what the filters pass weighted by the precision of each upload's DP noise (`noise_weighted`, "
            "the default edge rule), `_cap` by declared size capped at the median, `_avg` by declared size; see the "
            "note below) and FedAvg at the cloud, then the server optimiser listed; DP-SGD on every vehicle with C = 1 and δ = 1e-5. σ is "
            "derived from the target ε for the run's rounds over every vehicle's plan (its q and steps, docs/algorithms.md "
            "§1.2), so no vehicle spends more; 'ε spent' is the largest any vehicle spent (RDP). "
            "`today` is the reproduction's point (the CNN, σ = 2, q = min(1, B/n)). 'final' is the accuracy after the "
            f"last round, 'last {CEILING_LAST}' the mean of the last {CEILING_LAST} rounds; both over the seeds listed "
            "(mean, then min–max). Each run: `bench/frontier.py run NAME --eps E --rounds 80 --seed S [--partition "
            "dirichlet] [--attack A --attack-fraction F]`, then `render`."
        ), "",
        (
            f"Today's point, from the reproduction (docs/results.md, Fig. 5 with DP, complete non-IID, 80 rounds): "
            f"{REPRODUCTION[1]:.1%} at ε = {REPRODUCTION[0]:g}. The demo's 8-round setting (Dirichlet(0.9)) reaches "
            "0.91 at ε = 8 (docs/demo_defaults.md): at a fixed ε, 80 rounds of the same steps need 2.3× its σ."
        ), "",
        (
            "**The edge rule.** On complete non-IID data reweighting (the paper's rule) costs accuracy: its robust "
            "weights discount the minority updates that 2 classes a vehicle make necessary, and the same filters followed "
            "by averaging end higher (the tables below). Plain averaging (`_avg`) weights each upload by its vehicle's "
            "declared data size, which the registry does not bound (`registerVehicle` takes any `uint32`): one vehicle "
            "declaring 2³² − 1 samples would own its edge's aggregate and its pay, so it is not a default. The default, "
            "`noise_weighted` (`_nw`), weights by the precision of the DP noise each declared size implies, which stops "
            "growing once the batch is full: no declared size buys more than a full-batch vehicle's weight "
            "(docs/algorithms.md §4.2). Without DP it caps each size at the median (`_cap`, the same weights)."
        ), "",
        (
            "**The step schedule and the batch.** `cos` settings decay the cloud's step over the planned rounds "
            "(η_r = η·½(1 + cos(π(r − 1)/R)), docs/algorithms.md §4.1): with a constant step the DP noise keeps the "
            "global model wandering (complete non-IID at ε = 8: between 0.85 and 0.88 from round 30 on); the decay ends "
            "it near the middle of that wander. `b256` raises B to 256 under the same q_max = 0.1: q stays 0.1 for every "
            "vehicle with n ≤ 2,560, so the planned (q, steps) and σ are unchanged, and vehicles with n > 640 average "
            "their clipped gradients over larger batches (less noise a step, the same ε). A best setting is chosen among "
            f"those run on at least {MIN_SEEDS} seeds (fewer where none has that many)."
        ), "",
    ]  # fmt: skip
    for partition in sorted({k[0] for k in clean}):
        part = {k: v for k, v in clean.items() if k[0] == partition}
        lines += [f"## {partition}", "", "| target ε | best setting | seeds | final: mean (min–max) | last "
                  f"{CEILING_LAST}: mean | ε spent (max) | σ |", "|---|---|---|---|---|---|---|"]
        targets = sorted({v[0]["target"] for v in part.values() if v[0]["target"] is not None})
        for target in targets:
            at = [(k[1], v) for k, v in part.items() if v[0]["target"] == target]
            at = [kv for kv in at if len(kv[1]) >= MIN_SEEDS] or at  # a lucky seed or two does not make a best setting
            best = max(at, key=lambda kv: statistics.fmean(r["final"] for r in kv[1]))
            default = [kv for kv in at if _default_rule(kv[1])]
            shown = [best] + ([max(default, key=lambda kv: statistics.fmean(r["final"] for r in kv[1]))]
                              if default and not _default_rule(best[1]) else [])
            for name, rs in shown:
                label = name if name == best[0] else f"{name} (best with the default edge rule, {DEFAULT_EDGE})"
                lines.append(f"| {target:g} | {label} | {len(rs)} | {_spread([r['final'] for r in rs])} | "
                             f"{statistics.fmean(r['last'] for r in rs):.4f} | {max(r['epsilon'] for r in rs):.2f} | "
                             f"{rs[0]['sigma']:.3f} |")
        for (_, name, _, _), rs in part.items():
            if rs[0]["target"] is None:
                lines.append(f"| — ({name}) | {name} | {len(rs)} | {_spread([r['final'] for r in rs])} | "
                             f"{statistics.fmean(r['last'] for r in rs):.4f} | {max(r['epsilon'] for r in rs):.2f} | "
                             f"{rs[0]['sigma']:.3f} |")
        for (p, name, _, _), rs in groups.items():
            if p == partition and not rs[0]["dp"]:
                lines.append(f"| ∞ (no DP: {name}) | {name} | {len(rs)} | {_spread([r['final'] for r in rs])} | "
                             f"{statistics.fmean(r['last'] for r in rs):.4f} | — | — |")
        lines.append("")
    lines += _ablation(clean)
    attacked = {k: v for k, v in groups.items() if k[2]}
    if attacked:
        lines += [
            "## Fig. 6 on these settings", "",
            f"Accuracy under attack over the same setting's clean run (same seeds), each the mean of the last "
            f"{CEILING_LAST} rounds, as Fig. 6 reports; the issue asks for ≥ 90 %.", "",
            "| partition | setting | attack | attackers | seeds | under attack | clean | ratio: mean (min–max) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (partition, name, attack, fraction), rs in sorted(attacked.items(), key=lambda kv: kv[0]):
            base = {r["seed"]: r for r in clean.get((partition, name, None, 0.0), [])}
            paired = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
            if not paired:
                continue
            ratios = [a["last"] / c["last"] for a, c in paired]
            lines.append(f"| {partition} | {name} | {attack} | {fraction:.0%} | {len(paired)} | "
                         f"{statistics.fmean(a['last'] for a, _ in paired):.4f} | "
                         f"{statistics.fmean(c['last'] for _, c in paired):.4f} | {_spread(ratios)} |")
        lines.append("")
    lines += [
        "## Every run", "",
        "| run | partition | attack | target ε | ε spent | σ | q_max | B | steps/round | η | β | model | edges | server | final | "
        f"last {CEILING_LAST} | honest flagged | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["partition"], r["run"])):
        target = "—" if r["target"] is None else f"{r['target']:g}"
        eps, sigma = (f"{r['epsilon']:.2f}", f"{r['sigma']:.3f}") if r["dp"] else ("—", "—")
        attack = f"{r['attack']} {r['fraction']:.0%}" if r["attack"] else "—"
        lines.append(
            f"| {r['run']} | {r['partition']} | {attack} | {target} | {eps} | {sigma} | {r['qmax']:g} | "
            f"{r['B']} | {r['steps']} | {r['lr']:g} | {r['momentum']:g} | {r['model']} | {r['edge']} | {r['server']} | "
            f"{r['final']:.4f} | {r['last']:.4f} | {r['flagged']} | {r['wall_s'] / 60:.1f} min |"
        )  # fmt: skip
    lines += ["", f"![accuracy against ε]({Path(os.path.relpath(plot, out.parent)).as_posix()})"]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot_frontier(groups, plot)


def _plot_frontier(groups: dict[tuple, list[dict[str, Any]]], plot: Path) -> None:
    """Final accuracy against target ε, one panel per partition: the best setting at each ε (mean, min–max bars),
    today's point at the ε it spent, the non-private ceiling."""
    import matplotlib.pyplot as plt  # bmfl.plots chose the Agg backend

    partitions = sorted({k[0] for k in groups})
    fig, axes = plt.subplots(1, len(partitions), figsize=(5.5 * len(partitions), 4.5), squeeze=False)
    for ax, partition in zip(axes[0], partitions):
        part = {k: v for k, v in groups.items() if k[0] == partition and not k[2]}
        curves = {"best setting at the target (min–max)": lambda rs: True,
                  f"best with the default edge rule ({DEFAULT_EDGE})": _default_rule}
        drawn: list[dict[float, list[dict[str, Any]]]] = []
        seeded = {rs[0]["target"] for rs in part.values() if len(rs) >= MIN_SEEDS}  # targets with a 3-seed setting
        for label, admits in curves.items():
            best: dict[float, list[dict[str, Any]]] = {}
            for rs in part.values():
                t = rs[0]["target"]
                enough = len(rs) >= MIN_SEEDS or t not in seeded
                if rs[0]["dp"] and t is not None and enough and admits(rs) and (t not in best or _mean(rs) > _mean(best[t])):
                    best[t] = rs
            if not best or best in drawn:
                continue
            drawn.append(best)
            xs = sorted(best)
            means = [_mean(best[x]) for x in xs]
            low = [m - min(r["final"] for r in best[x]) for m, x in zip(means, xs)]
            high = [max(r["final"] for r in best[x]) - m for m, x in zip(means, xs)]
            ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=label)
        for (_, name, _, _), rs in part.items():
            if rs[0]["dp"] and rs[0]["target"] is None:
                ax.plot([max(r["epsilon"] for r in rs)], [_mean(rs)], "s", color="tab:red", label=f"{name} (ε spent)")
            if not rs[0]["dp"]:
                ax.axhline(_mean(rs), color="grey", linestyle="--", label=f"no DP ({name})")
        if partition == "complete_non_iid" and not any(rs[0]["dp"] and rs[0]["target"] is None for rs in part.values()):
            ax.plot([REPRODUCTION[0]], [REPRODUCTION[1]], "s", color="tab:red", label="today (reproduction, ε spent)")
        ax.axhline(0.9, color="grey", linestyle=":", label="90 % (issue 22)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64])
        ax.set_xticklabels(["1", "2", "4", "8", "16", "32", "64"])
        ax.set_xlabel("ε per vehicle (δ = 1e-5)")
        accuracy_axis(ax, f"final test accuracy ({FRONTIER_ROUNDS} rounds)")
        ax.set_title(f"{partition} · 50 vehicles / 5 edges · MNIST-10k", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    plt.close(fig)


def _mean(rs: list[dict[str, Any]]) -> float:
    return statistics.fmean(r["final"] for r in rs)


def records(runs: Path, last: int = LAST) -> list[dict[str, Any]]:
    """The row of every finished run under ``runs``."""
    return [record(f, last) for f in sorted(runs.iterdir()) if (f / "metrics.jsonl").exists()]


def setting_name(run: str) -> str:
    """``nodp_e1`` of the run ``nodp_e1_r80_s2``."""
    return run.rsplit("_r", 1)[0]


ABLATION = [  # complete non-IID at ε = 8: from the previous best towards private_long, one change a row
    ("scatter_q10_avgm5_env_smflag_nw", "the previous best: 3 steps of B = 64, constant server step"),
    ("scatter_q10_avgm5cos_env_smflag_nw", "cosine server step"),
    ("scatter_q10_b256_avgm5cos_env_smflag_nw", "cosine, B = 256"),
    ("scatter_q10_b256s5_avgm5cos_env_smflag_nw", "cosine, B = 256, 5 steps"),
    ("scatter_q10_b256s2_avgm5cos_env_smflag_nw", "cosine, B = 256, 2 steps"),
    (PRIVATE_LONG, "cosine, B = 256, 1 step (`private_long`)"),
    ("scatter_q10_b256s1_avgm5_env_smflag_nw", "constant step, B = 256, 1 step"),
    ("scatter_q10_s1_avgm5cos_env_smflag_nw", "cosine, B = 64, 1 step"),
    ("scatter_q10_b256s1_lr1_avgm5cos_env_smflag_nw", "cosine, B = 256, 1 step, η = 1"),
    ("scatter_q10_b256s2_lr1_avgm5cos_env_smflag_nw", "cosine, B = 256, 2 steps, η = 1"),
    ("scatter_q10_b256_lr04_avgm5cos_env_smflag_nw", "cosine, B = 256, 3 steps, η = 0.4"),
    ("scatter_q15_b256_avgm5cos_env_smflag_nw", "cosine, B = 256, 3 steps, q_max = 0.15"),
    ("scatter_q10_b256_avgm9cos_env_smflag_nw", "cosine, B = 256, 3 steps, β₁ = 0.9"),
]


def _ablation(clean: dict[tuple, list[dict[str, Any]]]) -> list[str]:
    """The ABLATION rows that ran (complete non-IID, target ε = 8)."""
    rows = []
    for name, change in ABLATION:
        rs = clean.get(("complete_non_iid", f"{name}_eps8", None, 0.0))
        if rs:
            rows.append(f"| {change} | {name} | {len(rs)} | {_spread([r['final'] for r in rs])} | {rs[0]['sigma']:.3f} |")
    if not rows:
        return []
    return [
        "## What moved ε = 8 on complete non-IID", "",
        "The same filters and edge rule (`_env_smflag_nw`, the default pipeline), one change at a time. At a fixed ε over a "
        "fixed number of rounds, each DP-SGD step spends privacy, so fewer steps a round let σ fall; the cloud's "
        "momentum carries the progress from round to round.", "",
        "| change | setting | seeds | final: mean (min–max) | σ |", "|---|---|---|---|---|", *rows, "",
    ]


def _spread(values: list[float]) -> str:
    """``0.9528 (0.9390–0.9680)``, or the one value."""
    mean = f"{statistics.fmean(values):.4f}"
    return mean if len(values) == 1 else f"{mean} ({min(values):.4f}–{max(values):.4f})"


def render_ceiling(runs: Path, out: Path, plot: Path) -> None:
    """docs/ceiling.md from every finished non-private run under ``runs``, and a plot of
    accuracy against round for the seeds of the best setting: the one whose seed-0 run
    of the most rounds ends with the highest accuracy."""
    rows = sorted((r for r in records(runs, CEILING_LAST) if not r["dp"]), key=lambda r: (r["run"].rsplit("_s", 1)[0], r["seed"]))
    longest = max(r["rounds"] for r in rows)
    full = [r for r in rows if r["rounds"] == longest]
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in full:
        by_setting.setdefault(setting_name(r["run"]), []).append(r)
    # Settings were compared on seed 0 (by their final accuracy on the test set), the best then rerun on more seeds.
    best, seeds = max(by_setting.items(), key=lambda kv: (kv[1][0]["seed"] == 0, kv[1][0]["final"]))
    finals, lasts = [r["final"] for r in seeds], [r["last"] for r in seeds]
    spread = (f"mean final accuracy {statistics.fmean(finals):.4f} over seeds {', '.join(str(r['seed']) for r in seeds)} "
              f"(min {min(finals):.4f}, max {max(finals):.4f}; last {CEILING_LAST}: mean {statistics.fmean(lasts):.4f}, "
              f"min {min(lasts):.4f}, max {max(lasts):.4f})")
    verdict = (f"Target {TARGET:.0%} at {longest} rounds: {'reached' if statistics.fmean(finals) >= TARGET else 'not reached'} "
               f"by the mean final accuracy of the best setting, `{best}` (chosen by its seed-0 run's final accuracy, then "
               f"rerun on more seeds): {spread}.")
    lines = [
        "# The non-private ceiling (issue 22; generated by `bench/frontier.py render-ceiling`)", "",
        (
            "BMFL's setting without DP (`training.dp = false`): the 10,000-image MNIST the project ships (`mnist`, 8,000 "
            "images dealt to the vehicles, the whole held-out 2,000 scored each round; the edges' self-reliability filter "
            "scores 200 of them), complete non-IID (2 classes a vehicle, power-law sizes), 50 vehicles on 5 edges, every "
            "vehicle trains every round, BMFL's edge method (self-reliability, tolerance 1, then reweighting), FedAvg at "
            "the cloud then the server optimiser listed, no attackers. The test split is the same in every run; the seed "
            "deals the vehicles' data and their edges and draws w⁰, the edges' 200 test images and the batches. A vehicle with n images takes E·⌈n/B⌉ local steps a round, "
            "capped where 'steps/round' says ≤ (most vehicles hold under 200 images, so the cap binds for few); "
            f"'last {CEILING_LAST}' is the mean accuracy of the last {CEILING_LAST} rounds; 'best' the "
            "highest accuracy of any round and its round (chosen on the test set, so not an estimate); 'wall' is the "
            "simulator's own time on 2 shared CPU cores. Each row: `bench/frontier.py run NAME --rounds R --seed S` "
            "for the row `NAME_rR_sS`, then `bench/frontier.py render-ceiling`."
        ), "",
        verdict, "",
        f"| setting ({longest} rounds) | seeds | final acc.: mean (min–max) | last {CEILING_LAST}: mean (min–max) |",
        "|---|---|---|---|",
        *(f"| {name} | {', '.join(str(r['seed']) for r in runs_)} | {_spread([r['final'] for r in runs_])} | "
          f"{_spread([r['last'] for r in runs_])} |" for name, runs_ in by_setting.items()),
        "",
        f"| run | seed | rounds | B | steps/round | η | β | model | server | final acc. | last {CEILING_LAST} | best (round) | honest flagged | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        steps = f"≤ {r['steps']} (E = {r['epochs']})" if r["steps"] is not None else f"E = {r['epochs']}"
        lines.append(
            f"| {r['run']} | {r['seed']} | {r['rounds']} | {r['B']} | {steps} | {r['lr']:g} | {r['momentum']:g} | "
            f"{r['model']} | {r['server']} | {r['final']:.4f} | {r['last']:.4f} | {r['best']:.4f} ({r['best_round']}) | "
            f"{r['flagged']} | {r['wall_s'] / 60:.1f} min |"
        )  # fmt: skip
    lines += ["", f"![accuracy against round, {best}]({Path(os.path.relpath(plot, out.parent)).as_posix()})"]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib.pyplot as plt  # bmfl.plots chose the Agg backend

    top = seeds[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, zoom in zip(axes, (False, True)):
        for r in seeds:
            ax.plot(range(1, r["rounds"] + 1), r["accuracy"], linewidth=1, alpha=0.7, label=f"seed {r['seed']}")
        band(ax, list(range(1, longest + 1)), [r["accuracy"] for r in seeds], "mean (band: min–max)", color="black")
        ax.axhline(TARGET, color="grey", linestyle=":", label=f"{TARGET:.0%} (issue 22)")
        round_axis(ax)
        accuracy_axis(ax)
        if zoom:
            start = longest * 3 // 4
            ax.set_xlim(start, longest + 0.5)
            ax.set_ylim(min(min(r["accuracy"][start - 1 :]) for r in seeds) - 0.005, max(TARGET, max(finals)) + 0.01)
            ax.set_title(f"rounds {start}–{longest}, zoomed", fontsize=9)
    legend_outside(axes[1])
    fig.suptitle(
        f"no DP · complete non-IID MNIST-10k · 50 vehicles / 5 edges · self-reliability + reweight / fedavg\n{best}: "
        f"B = {top['B']}, ≤ {top['steps']} steps, η = {top['lr']:g}, β = {top['momentum']:g}, {top['model']}, "
        f"{top['server']}", fontsize=9,
    )  # fmt: skip
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "render", "render-ceiling"))
    parser.add_argument("names", nargs="*", help="settings to run, one after another")
    parser.add_argument("--eps", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="deals the data and draws the batches (and DP noise)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--partition", choices=sorted(PARTITIONS), default="complete")
    parser.add_argument("--attack", help="attack of a fraction of the vehicles (registry name), e.g. sign_flip")
    parser.add_argument("--attack-fraction", type=float, default=0.0)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, help=f"render: default {OUT}; render-ceiling: default {CEILING}")
    args = parser.parse_args()
    if args.action == "render":
        render(args.runs, args.out or OUT)
        return
    if args.action == "render-ceiling":
        render_ceiling(args.runs, args.out or CEILING, CEILING_PLOT)
        return
    unknown = [n for n in args.names if n not in SETTINGS]
    if unknown or not args.names:
        parser.error(f"name one or more settings of {list(SETTINGS)} (unknown: {unknown})")
    console = Console()
    for name in args.names:
        cfg = config(name, args.eps, args.rounds, args.quick, args.seed, args.partition, args.attack, args.attack_fraction)
        cfg = cfg.model_copy(update={"output_dir": str(args.runs)})
        result = run_simulation(cfg, console, on_round=lambda m, run=cfg.name: console.print(
            f"{run} round {m.round}: accuracy {m.accuracy:.4f}, {m.honest_flagged} flagged, {m.wall_time_s:.1f} s"))
        write_outputs(result, args.runs / cfg.name)


if __name__ == "__main__":
    main()
