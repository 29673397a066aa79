"""The robustness matrix of issue 17: edge pipelines × adaptive attacks × attacker
fractions × partitions, over several seeds, generated into ``OUT/NAME.md`` with a plot
(never hand-edited; ``--name``, default ``robustness_matrix``; the project's own matrix
is ``docs/robustness.md``).

``python -m bmfl.reproduce.robustness --quick`` is the CI version (tiny data, one seed,
well under a minute); without ``--quick`` it runs the ``full`` scale below. Every cell
reports, as mean ± standard deviation over the seeds:

- **rel. acc.**: the mean test accuracy of the last ``settle`` rounds over the same
  pipeline's clean run with the same seed (the issue's "share of its clean accuracy");
- **ASR**: the attack's success at its own goal (``Attack.success_rate``, last ``settle``
  rounds): a backdoor's triggered non-target test images, a targeted flip's source-class
  test images, classified as its target;
- **honest flagged**: honest uploads given weight 0, over all honest uploads of the run;
- **attacker weight**: the attackers' share of w^r, averaged over rounds.

The row ``ideal filter`` is a reference, not an attack: each pipeline with the edges
dropping exactly the attackers' uploads, the accuracy its honest vehicles alone reach.

The report says of each attack whether it colludes at its edge and what it sees there,
from its class (``colludes``, ``knowledge``); ``reliability_aware`` knows the
self-reliability filter's tolerance as the BMFL pipeline configures it; ``clip_aware`` sends the reversed mean update at the median
honest norm, which norm clipping leaves whole; ``trust_aware`` sends an update 45° off the
benign mean, which FLTrust trusts more than a DP-noised honest one; ``cc_aware`` sends the
reversed mean update just inside centered clipping's radius around its centre;
``envelope_aware`` sends its own fresh DP-sized noise minus the largest clipped signal the
``dp_envelope`` filter admits, along the attackers' DP-free descent direction;
``envelope_backdoor`` sends the same noise plus that largest signal along the attackers'
backdoored update; ``white_box`` queries the edge's exact pipeline, its test set
included, for the longest push against the descent direction that it lets through;
``free_rider`` trains nothing and sends w^{r-1} plus fresh noise at the DP variance, on
its own (no collusion); ``label_flip`` trains honestly, with DP, on flipped labels (every
label y ↦ 9 − y, or only 7 ↦ 1: a targeted flip). DP is on for every vehicle except the
backdoor attackers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from bmfl.plots import accuracy_axis, band, legend_outside, round_axis  # noqa: E402
from rich.console import Console  # noqa: E402

from bmfl.attacks.base import ATTACKS as ATTACK_REGISTRY  # noqa: E402
from bmfl.reproduce.grid import BACKDOOR, BMFL_TRAINING, COMPLETE_NON_IID, DIRICHLET, SELF_RELIABILITY, Run  # noqa: E402
from bmfl.reproduce.run import fingerprint, run_grid  # noqa: E402
from bmfl.task import CREDIT, PRESETS, RuleSpec, TaskDraft  # noqa: E402

CLEAN = "clean"
IDEAL = "ideal filter"
"""A reference row, not an attack: the edges drop exactly the attackers' uploads, so each
pipeline's cell is what the honest vehicles' data alone reach (attackers hold classes
nobody else has on complete non-IID data)."""
BACKDOOR_ATTACK = "scaled_backdoor"


def pipelines(test_size: int | None) -> dict[str, dict[str, Any]]:
    """Edge pipelines by label (``bmfl.task.AggregationSpec`` without the cloud rule).
    ``accuracy_test`` is told the edges' test-set size; the DP-aware filters get the
    task's training settings from the round core."""
    acc_test = {"name": "accuracy_test", "options": {"test_size": test_size}}
    clip = {"name": "norm_clip", "options": {}}
    dp_floor = {"name": "dp_floor", "options": {}}
    envelope = {"name": "dp_envelope", "options": {}}
    root_floor = {"name": "root_floor", "options": {}}
    class_floor = {"name": "class_floor", "options": {}}
    dp_reliability = {"name": "dp_self_reliability", "options": {}}
    signal_median = {"name": "signal_median", "options": {}}
    majority_median = {"name": "signal_median", "options": {"clip": False, "centre": "majority_mean"}}
    default = TaskDraft().aggregation  # a new task's
    leave_out_fifth = {"edge": {"name": "noise_weighted"},
                       "filters": [envelope, majority_median, {"name": "leave_out", "options": {"step": 0.2}}]}
    return {
        "FedAvg": {"edge": {"name": "fedavg"}, "filters": []},
        "BMFL": {"edge": {"name": "reweight"}, "filters": [SELF_RELIABILITY]},
        # the paper's pipeline as the `paper` preset runs it: self-reliability at the filter's own tolerance
        "BMFL(τ=25)": {"edge": {"name": "reweight"}, "filters": [{"name": "self_reliability", "options": {}}]},
        "FLAME": {"edge": {"name": "flame"}, "filters": []},
        "FLTrust": {"edge": {"name": "fltrust"}, "filters": []},
        "DnC": {"edge": {"name": "fedavg"}, "filters": [{"name": "dnc", "options": {}}]},
        "Clip+Reweight": {"edge": {"name": "reweight"}, "filters": [clip]},
        "AccTest+Clip+Reweight": {"edge": {"name": "reweight"}, "filters": [acc_test, clip]},
        "AccTest+Clip+FedAvg": {"edge": {"name": "fedavg"}, "filters": [acc_test, clip]},
        "DPFloor+BMFL": {"edge": {"name": "reweight"}, "filters": [dp_floor, SELF_RELIABILITY]},
        "DPFloor+Clip+Reweight": {"edge": {"name": "reweight"}, "filters": [dp_floor, clip]},
        "CC": {"edge": {"name": "centered_clip"}, "filters": []},
        "Envelope+FedAvg": {"edge": {"name": "fedavg"}, "filters": [envelope]},
        "Envelope+BMFL": {"edge": {"name": "reweight"}, "filters": [envelope, SELF_RELIABILITY]},
        "Envelope+RootFloor+FedAvg": {"edge": {"name": "fedavg"}, "filters": [envelope, root_floor]},
        "Envelope+ClassFloor+BMFL": {"edge": {"name": "reweight"}, "filters": [envelope, class_floor, SELF_RELIABILITY]},
        "Envelope+DPSR+BMFL": {"edge": {"name": "reweight"}, "filters": [envelope, dp_reliability]},
        "Envelope+DPSR+NW": {"edge": {"name": "noise_weighted"}, "filters": [envelope, dp_reliability]},
        "Envelope+SM+DPSR+NW": {"edge": {"name": "noise_weighted"}, "filters": [envelope, signal_median, dp_reliability]},
        "Envelope+SMflag+DPSR+NW": {"edge": {"name": "noise_weighted"},
                                    "filters": [envelope, {"name": "signal_median", "options": {"clip": False}}, dp_reliability]},
        "Envelope+SMflag+DPSR+MM": {"edge": {"name": "mixed_median"},
                                    "filters": [envelope, {"name": "signal_median", "options": {"clip": False}}, dp_reliability]},
        "Envelope+SMflag+DPSR+LO+NW": {"edge": {"name": "noise_weighted"},
                                       "filters": [envelope, {"name": "signal_median", "options": {"clip": False}}, dp_reliability,
                                                   {"name": "leave_out", "options": {}}]},
        "Envelope+SMflag+DPSR+LO(0.2)+NW": {"edge": {"name": "noise_weighted"},
                                            "filters": [envelope, {"name": "signal_median", "options": {"clip": False}}, dp_reliability,
                                                        {"name": "leave_out", "options": {"step": 0.2}}]},
        "Envelope+SMflag+LO+NW": {"edge": {"name": "noise_weighted"},
                    "filters": [envelope, {"name": "signal_median", "options": {"clip": False}},
                                {"name": "leave_out", "options": {}}]},
        "Envelope+SMmaj+DPSR+NW": {"edge": {"name": "noise_weighted"},
                                   "filters": [envelope, majority_median, dp_reliability]},
        "Envelope+SMmaj+LO+NW": {"edge": {"name": "noise_weighted"},
                                 "filters": [envelope, majority_median, {"name": "leave_out", "options": {}}]},
        "Envelope+SMmaj+LO(0.2)+NW": leave_out_fifth,
        "Envelope+SMmaj+LO(0.2)+NW+R(0.05)": leave_out_fifth | {"ratchet": 0.05},  # behind the cloud's guard (§8.8)
        # judged closer to the full step after refused rounds (§8.9)
        "Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)": {
            "edge": {"name": "noise_weighted"}, "ratchet": 0.05,
            "filters": [envelope, majority_median, {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5}}]},
        # the same behind each vehicle's standing in the task (§8.10)
        "Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)+St": {
            "edge": {"name": "noise_weighted"}, "ratchet": 0.05, "standing": {},
            "filters": [envelope, majority_median, {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5}}]},
        # the same, each kept upload weighted by the evidence that it helps (§8.11)
        "Envelope+SMmaj+LO(0.2×2.5)+Cr+NW+R(0.05)+St": {
            "edge": {"name": "noise_weighted"}, "ratchet": 0.05, "standing": {},
            "filters": [envelope, majority_median,
                        {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5, "credit": list(CREDIT)}}]},
        # a new task's aggregation as bmfl.task.TaskDraft gives it (the default pipeline, every option spelled out)
        "Default": {"edge": default.edge.model_dump(), "filters": [f.model_dump() for f in default.filters],
                    **({} if default.ratchet is None else {"ratchet": default.ratchet}),
                    **({} if default.standing is None else {"standing": default.standing.model_dump()})},
    }


FORMER = {
    "Envelope+SMmaj+LO(0.2)+NW": "the default's edges before §8.8, without the cloud's guard",
    "Envelope+SMmaj+LO(0.2)+NW+R(0.05)": "the default before §8.9: the same edges behind the guard, never escalated",
    "Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)": "the default before §8.10: the same, without the vehicles' standings",
}
"""Pipelines that were the default once, as the matrix pages name them."""


ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "ALIE z=1.5": ("alie", {"z": 1.5}),
    "ALIE z_max": ("alie", {"z": None}),
    "IPM ε=0.5": ("ipm", {"epsilon": 0.5}),
    "IPM ε=100": ("ipm", {"epsilon": 100.0}),
    "min-max": ("min_max", {}),
    "min-sum": ("min_sum", {}),
    "SR-aware": ("reliability_aware", {"tolerance": SELF_RELIABILITY["options"]["tolerance"]}),
    "clip-aware": ("clip_aware", {}),
    "FLTrust-aware": ("trust_aware", {}),
    "CC-aware": ("cc_aware", {}),
    "envelope-aware": ("envelope_aware", {"training": dict(BMFL_TRAINING)}),
    "median-aware": ("median_aware", {"training": dict(BMFL_TRAINING)}),
    "pipeline-aware": ("pipeline_aware", {"training": dict(BMFL_TRAINING), "aggregation": {}}),
    "white-box": ("white_box", {"training": dict(BMFL_TRAINING)}),
    "white-box+help": ("white_box", {"training": dict(BMFL_TRAINING), "help": 3}),
    "frame": ("frame", {"training": dict(BMFL_TRAINING)}),
    "sign flip": ("sign_flip", {}),
    "label flip": ("label_flip", {}),
    "targeted flip 7→1": ("label_flip", {"mapping": {7: 1}}),
    "pixel backdoor": ("backdoor", {**BACKDOOR}),
    "scaled backdoor": (BACKDOOR_ATTACK, {**BACKDOOR}),
    "envelope backdoor": ("envelope_backdoor", {**BACKDOOR, "training": dict(BMFL_TRAINING)}),
    "free rider": ("free_rider", {"training": dict(BMFL_TRAINING)}),
    IDEAL: ("sign_flip", {}),
}


@dataclass(frozen=True)
class Profile:
    """What every vehicle trains and what the cloud does with the edges' models, whatever
    the pipeline: the model, its DP-SGD settings (also the envelope attackers' public
    knowledge) and the cloud's server optimiser."""

    model: str
    training: dict[str, Any]
    server: dict[str, Any]
    description: str


PROFILES = {
    "cnn": Profile("bmfl_cnn", dict(BMFL_TRAINING), {"name": "paper"},
                   "the 21,840-parameter CNN trained as `bmfl.reproduce.grid.BMFL_TRAINING` (DP-SGD σ = 2, C = 1)"),
    "private": Profile(
        "scatter_linear",
        {"epochs": 1, "max_steps": 3, "batch_size": 64, "lr": 0.6, "momentum": 0.5, "max_sampling_rate": 0.25,
         "dp": True, "clip": 1.0, "noise_multiplier": 1.135, "delta": 1e-5},
        {"name": "fedavgm", "lr": 1.0, "beta1": 0.9},
        "the `private` preset's training: `scatter_linear`, 3 DP-SGD steps of B = 64 at q ≤ 0.25, η = 0.6, β = 0.5, "
        "C = 1, σ = 1.135 (what the preset derives for ε = 8 over the demo's 8 rounds), FedAvgM (β₁ = 0.9) at the cloud",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Scale:
    name: str
    mnist: str
    vehicles: int
    edges: int
    rounds: int
    settle: int
    edge_test_samples: int | None  # None: the whole test set
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    attacks: tuple[str, ...]
    pipelines: tuple[str, ...]
    partitions: tuple[str, ...]
    profile: str = "cnn"


PARTITIONS = {"complete non-IID": COMPLETE_NON_IID, "Dirichlet(0.9)": DIRICHLET}
FULL_PIPELINES = ("FedAvg", "BMFL", "FLAME", "FLTrust", "DnC", "DPFloor+BMFL", "DPFloor+Clip+Reweight")
QUICK = Scale("quick", "mnist_5k", 10, 2, 2, 1, 300, (0.2,), (0,), ("ALIE z=1.5", "white-box"),
              ("FedAvg", "BMFL(τ=25)", "Envelope+SMmaj+LO+NW", "Default"), ("Dirichlet(0.9)", "complete non-IID"), "private")
"""The CI version of ``docs/robustness.md``: its training, pipelines and partitions, two rounds of one seed."""
FULL = Scale("full", "mnist", 50, 5, 80, 10, 300, (0.2, 0.4, 0.6), (0, 1, 2), tuple(ATTACKS), FULL_PIPELINES,
             tuple(PARTITIONS))
SCALES = {"quick": QUICK, "full": FULL}


def _config(scale: Scale, seed: int, partition: str, pipeline: str, attack: dict | None) -> dict[str, Any]:
    profile = PROFILES[scale.profile]
    cfg = {
        "seed": seed, "rounds": scale.rounds, "vehicles": scale.vehicles, "edges": scale.edges, "model": profile.model,
        "data": {"name": scale.mnist, "edge_test_samples": scale.edge_test_samples},
        "partition": PARTITIONS[partition], "training": dict(profile.training),
        "aggregation": {**pipelines(scale.edge_test_samples)[pipeline], "cloud": {"name": "fedavg"}},
    }
    if profile.server["name"] != "paper":
        cfg["aggregation"]["server"] = dict(profile.server)
    if attack is not None:
        cfg["attack"] = attack
    return cfg


SEES = {"own": "its colluders' uploads only", "omniscient": "also the edge's honest uploads",
        "white_box": "also the edge's pipeline, test set included"}
"""What colluders see at their edge, by the attack's ``knowledge`` (``bmfl.attacks.base.KNOWLEDGE``)."""


def collusion(name: str) -> str:
    """Whether attack ``name`` colludes at its edge and what it sees there, from its class."""
    attack = ATTACK_REGISTRY.factory(name)
    return f"colludes at its edge, sees {SEES[attack.knowledge]}" if attack.colludes else "alone"


def attack_options(scale: Scale, label: str) -> tuple[str, dict[str, Any]]:
    """Attack ``label``'s registry name and options; an attack that knows the task's
    training settings is told the scale's profile's."""
    name, options = ATTACKS[label]
    if "training" in options:
        options = {**options, "training": dict(PROFILES[scale.profile].training)}
    return name, dict(options)


def key(partition: str, attack: str, fraction: float, pipeline: str, seed: int) -> str:
    return f"{partition}/{attack}/{fraction}/{pipeline}/{seed}"


def _median_centre(pipeline: dict[str, Any]) -> dict[str, Any]:
    """``{"centre": …}`` where ``pipeline`` runs ``signal_median`` with a centre other than
    the geometric median (empty otherwise, so earlier runs keep their fingerprints)."""
    for f in pipeline["filters"]:
        if f["name"] == "signal_median" and f["options"].get("centre", "geometric_median") != "geometric_median":
            return {"centre": f["options"]["centre"]}
    return {}


def matrix(scale: Scale) -> list[Run]:
    """Every run: the clean run of each (partition, pipeline, seed), then the attacked ones.
    The backdoor runs on Dirichlet(0.9) only where that partition is in the scale (Fig. 7)."""
    runs = []
    for partition in scale.partitions:
        for seed in scale.seeds:
            for pipeline in scale.pipelines:
                runs.append(Run(key(partition, CLEAN, 0.0, pipeline, seed), _config(scale, seed, partition, pipeline, None)))
                for label in scale.attacks:
                    name, options = attack_options(scale, label)
                    if "aggregation" in options:  # an attack that knows the edges' pipeline is told this run's
                        options["aggregation"] = pipelines(scale.edge_test_samples)[pipeline]
                    if name == "median_aware":  # it models the run's signal median, centre included
                        options |= _median_centre(pipelines(scale.edge_test_samples)[pipeline])
                    for fraction in scale.fractions:
                        attack = {"name": name, "fraction": fraction, "options": dict(options)} | (
                            {"ideal_filter": True} if label == IDEAL else {})
                        runs.append(Run(key(partition, label, fraction, pipeline, seed),
                                        _config(scale, seed, partition, pipeline, attack)))
    return runs


ROW_FIELDS = ("round", "accuracy", "attack_success_rate", "trainers", "attackers_selected", "attackers_flagged",
              "honest_flagged", "attacker_weight")
"""What a cached run keeps of each round: what the report and the plot read."""


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as the cache keeps it: each round cut to :data:`ROW_FIELDS` and the rounds
    stored a column per field (a matrix's cache holds hundreds of runs; traffic and timing
    per round are not reported, and field names repeated per round were most of its size)."""
    return record | {"rows": {k: [r[k] for r in record["rows"]] for k in ROW_FIELDS}}


def unslim(record: dict[str, Any]) -> dict[str, Any]:
    """A cached ``record`` with its rounds as rows again (caches written before the columns
    came in are already so)."""
    columns = record["rows"]
    if isinstance(columns, list):
        return record
    return record | {"rows": [dict(zip(columns, values)) for values in zip(*columns.values())]}


def summarise(record: dict[str, Any], settle: int) -> dict[str, float | None]:
    """The run's settled accuracy, ASR, honest-flagged rate and attacker weight share."""
    rows = record["rows"]
    tail = rows[-settle:]
    honest = sum(r["trainers"] - r["attackers_selected"] for r in rows)
    asr = [r["attack_success_rate"] for r in tail if r["attack_success_rate"] is not None]
    return {
        "accuracy": statistics.fmean(r["accuracy"] for r in tail),
        "asr": statistics.fmean(asr) if asr else None,
        "honest_flagged": sum(r["honest_flagged"] for r in rows) / honest if honest else 0.0,
        "attacker_weight": statistics.fmean(r["attacker_weight"] for r in rows),
    }


def _spread(values: list[float], fmt: str, worst: bool = False) -> str:
    """``mean ± sd`` over the seeds; with ``worst``, the largest seed's value after it."""
    if not values:
        return "—"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{fmt}} ± {sd:{fmt}}" + (f" (≤ {max(values):{fmt}})" if worst and len(values) > 1 else "")


def cells(scale: Scale, records: dict[str, dict[str, Any]]) -> dict[tuple[str, str, float, str], dict[str, list[float]]]:
    """Per (partition, attack, fraction, pipeline): each metric's values over the seeds;
    ``relative`` is accuracy over the clean run of the same pipeline and seed."""
    out: dict[tuple[str, str, float, str], dict[str, list[float]]] = {}
    for partition in scale.partitions:
        for pipeline in scale.pipelines:
            for label in (CLEAN, *scale.attacks):
                for fraction in ((0.0,) if label == CLEAN else scale.fractions):
                    metrics: dict[str, list[float]] = {"relative": [], "accuracy": [], "asr": [],
                                                       "honest_flagged": [], "attacker_weight": []}
                    for seed in scale.seeds:
                        run = summarise(records[key(partition, label, fraction, pipeline, seed)], scale.settle)
                        clean = summarise(records[key(partition, CLEAN, 0.0, pipeline, seed)], scale.settle)
                        metrics["relative"].append(run["accuracy"] / clean["accuracy"] if clean["accuracy"] else 0.0)
                        for name in ("accuracy", "honest_flagged", "attacker_weight"):
                            metrics[name].append(run[name])
                        if run["asr"] is not None:
                            metrics["asr"].append(run["asr"])
                    out[(partition, label, fraction, pipeline)] = metrics
    return out


def _table(lines: list[str], header: list[str], rows: list[list[str]]) -> None:
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")


def plot(scale: Scale, records: dict[str, dict[str, Any]], path: Path) -> None:
    """Test accuracy per round at the first fraction, one panel per attack and partition
    (side by side), a line per pipeline: the mean over seeds with a min–max band."""
    fraction, several = scale.fractions[0], len(scale.partitions) > 1
    panels = [(label, partition) for label in (CLEAN, *scale.attacks) for partition in scale.partitions]
    cols = min(2 * len(scale.partitions) if several else 3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax, (label, partition) in zip(axes.flat, panels):
        frac = 0.0 if label == CLEAN else fraction
        for pipeline in scale.pipelines:
            curves = [[r["accuracy"] for r in records[key(partition, label, frac, pipeline, s)]["rows"]] for s in scale.seeds]
            band(ax, list(range(1, min(map(len, curves)) + 1)), curves, pipeline, lw=1.4)
        where = f", {partition}" if several else ""
        ax.set_title(f"{label}{where}" if label == CLEAN else f"{label}{where}, {fraction:.0%} attackers", fontsize=10)
        round_axis(ax)
        accuracy_axis(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    legend_outside(axes.flat[cols - 1], fontsize=7)
    fig.suptitle(f"{scale.mnist}, {' and '.join(scale.partitions)}, {scale.vehicles} vehicles / {scale.edges} edges, DP on, "
                 f"seeds {', '.join(map(str, scale.seeds))} (mean, min–max band)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title above the first row
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps(rules: list[dict[str, Any]]) -> list[str]:
    """Filters and rule as ``name`` or ``name(option=value, …)``."""
    return [RuleSpec.model_validate(r).label() for r in rules]


def write_report(
    scale: Scale, records: dict[str, dict[str, Any]], out: Path, cpu_s: float, command: str, stem: str = "robustness_matrix"
) -> Path:  # fmt: skip
    """``out``/``stem``.md and its plot ``stem``.png."""
    table = cells(scale, records)
    figure = out / f"{stem}.png"
    plot(scale, records, figure)
    lines = [
        "# Robustness matrix (issue 17)", "",
        f"Generated by `{command}` (never edited by hand); the simulations took {cpu_s / 60:.1f} "
        f"CPU-minutes. Scale `{scale.name}`: {scale.mnist}, {scale.vehicles} vehicles, "
        f"{scale.edges} edges, {scale.rounds} rounds, metrics over the last {scale.settle} round(s), "
        f"edge test set {f'{scale.edge_test_samples} images' if scale.edge_test_samples else 'the whole test set'}, seeds {', '.join(map(str, scale.seeds))}; "
        f"training profile `{scale.profile}`: {PROFILES[scale.profile].description}. Cells: mean ± sd over the seeds.", "",
        "Pipelines (edge filters → rule; the cloud averages by data, behind its rollback guard where a tolerance is "
        "given, docs/algorithms.md §8.8):", "",
    ]
    default = TaskDraft().aggregation.model_dump()
    ours = (_steps(default["filters"] + [default["edge"]]), default["ratchet"], default["standing"] is not None)
    presets = {preset: (_steps(fields["aggregation"].get("filters", []) + [fields["aggregation"].get("edge", default["edge"])]),
                        fields["aggregation"].get("ratchet"), fields["aggregation"].get("standing") is not None)
               for preset, fields in PRESETS.items()}  # fmt: skip
    for name in scale.pipelines:
        spec = pipelines(scale.edge_test_samples)[name]
        measured = (_steps(spec["filters"] + [spec["edge"]]), spec.get("ratchet"), spec.get("standing") is not None)
        preset = next((preset for preset, rules in presets.items() if rules == measured), None)
        label = (" (the default pipeline)" if measured == ours
                 else f" ({FORMER[name]})" if name in FORMER
                 else " (the default's edges without the cloud's guard)" if measured[0] == ours[0]
                 else f" (the `{preset}` preset's pipeline)" if preset
                 else " (the paper's pipeline)" if name == "BMFL" else "")  # fmt: skip
        guard = "" if measured[1] is None else f"; the cloud's ratchet, tolerance {measured[1]:g}"
        guard += "; each vehicle's standing in the task (§8.10)" if measured[2] else ""
        lines.append(f"- **{name}**{label}: " + " → ".join(measured[0]) + guard)
    lines += ["", "Attacks:", ""]
    for label in scale.attacks:
        if label == IDEAL:
            lines.append(f"- **{label}**: no attack; the edges drop exactly the attackers' uploads, a reference that knows "
                         "who they are: what the honest vehicles' data alone reach under each pipeline")
            continue
        name, options = attack_options(scale, label)
        knows = ", and each run's edge pipeline" if options.pop("aggregation", None) is not None else ""
        if name == "median_aware" and any(_median_centre(pipelines(scale.edge_test_samples)[p]) for p in scale.pipelines):
            knows = ", and the centre of each run's signal median"
        lines.append(f"- **{label}** ({collusion(name)}): `{name}` {json.dumps(options, ensure_ascii=False)}{knows}")
    lines.append("")
    for partition in scale.partitions:
        lines += [f"## {partition}", ""]
        clean = [_spread(table[(partition, CLEAN, 0.0, p)]["accuracy"], ".3f") for p in scale.pipelines]
        lines += ["Clean accuracy (no attacker):", ""]
        _table(lines, list(scale.pipelines), [clean])
        for title, metric, fmt in (("Accuracy relative to the clean run", "relative", ".2f"),
                                   ("Honest uploads wrongly flagged (the worst seed in brackets)", "honest_flagged", ".3f"),
                                   ("Attackers' weight share of w^r", "attacker_weight", ".2f"),
                                   ("Attack success rate (backdoors: triggered images; targeted flips: source-class images; classified as the target)", "asr", ".3f")):
            rows, worst = [], metric == "honest_flagged"  # the bound holds on every seed
            for label in scale.attacks:
                for fraction in scale.fractions:
                    values = [table[(partition, label, fraction, p)][metric] for p in scale.pipelines]
                    if metric == "asr" and not any(values):
                        continue
                    rows.append([label, f"{fraction:.0%}"] + [_spread(v, fmt, worst) for v in values])
            if metric == "honest_flagged":
                rows.insert(0, ["none", "0 %"] + [_spread(table[(partition, CLEAN, 0.0, p)][metric], fmt, worst)
                                                  for p in scale.pipelines])
            if rows:
                lines += [f"### {title}", ""]
                _table(lines, ["attack", "attackers", *scale.pipelines], rows)
    lines += [f"![accuracy per round]({figure.name})", ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI matrix (tiny data, one seed)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--name", default="robustness_matrix", help="file names in OUT: NAME.md, NAME.png, NAME.cache.jsonl.gz")
    parser.add_argument("--jobs", "-j", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="reuse the runs cached in OUT by an earlier invocation")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the scale's seeds")
    parser.add_argument("--vehicles", type=int, help="override the scale's fleet size (with --edges, --rounds)")
    parser.add_argument("--edges", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--settle", type=int)
    parser.add_argument("--mnist", help="dataset registry name, e.g. mnist_5k")
    parser.add_argument("--attacks", nargs="+", help="attack labels (see ATTACKS)")
    parser.add_argument("--pipelines", nargs="+", help="pipeline labels (see pipelines())")
    parser.add_argument("--partitions", nargs="+", help="partition labels")
    parser.add_argument("--fractions", type=float, nargs="+")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="what the vehicles train (default: the scale's, cnn)")
    parser.add_argument("--test-samples", help="the edges' test set: a number of images, or 'full' for the whole test set")
    args = parser.parse_args(argv)
    import dataclasses

    import torch

    torch.set_num_threads(1)
    scale = SCALES["quick" if args.quick else "full"]
    overrides = {f: getattr(args, f) for f in ("vehicles", "edges", "rounds", "settle", "mnist", "profile")
                 if getattr(args, f) is not None}
    for f in ("seeds", "attacks", "pipelines", "partitions", "fractions"):
        if getattr(args, f):
            overrides[f] = tuple(getattr(args, f))
    if args.test_samples is not None:
        overrides["edge_test_samples"] = None if args.test_samples == "full" else int(args.test_samples)
    scale = dataclasses.replace(scale, **overrides, name=scale.name + ("+overrides" if overrides else ""))
    console = Console()
    runs = matrix(scale)
    console.print(f"robustness matrix, scale {scale.name}: {len(runs)} runs")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / f"{args.name}.cache.jsonl.gz"  # gzip: one config fingerprint a line compresses tenfold
    saved = [unslim(json.loads(line)) for line in gzip.open(cache, "rt").read().splitlines()] if args.resume and cache.exists() else []
    reuse = {r["fingerprint"]: r for r in saved}
    if not args.resume:
        gzip.open(cache, "wt").close()
    start = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    for seed in scale.seeds:  # one seed at a time, cached as it finishes: an interrupted matrix resumes
        done, _ = run_grid([r for r in runs if r.config["seed"] == seed], console, reuse, args.jobs)
        records.update(done)
        new = [rec for rec in {r["fingerprint"]: r for r in done.values()}.values() if rec["fingerprint"] not in reuse]
        reuse |= {rec["fingerprint"]: rec for rec in new}
        if new:  # one more gzip member per seed that ran anything: the file reads back as one stream
            with gzip.open(cache, "at") as fh:
                fh.writelines(json.dumps(slim(rec), separators=(",", ":")) + "\n" for rec in new)  # compact: hundreds of runs
    used = {fingerprint(run.config) for run in runs}
    cpu_s = sum(r["cpu_s"] for fp, r in reuse.items() if fp in used)
    console.print(f"{cpu_s / 60:.1f} CPU-minutes of simulation, {(time.perf_counter() - start) / 60:.1f} min wall")
    command = shlex.join(["python", "-m", "bmfl.reproduce.robustness", *(sys.argv[1:] if argv is None else argv)])
    path = write_report(scale, records, args.out, cpu_s, command, args.name)
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
