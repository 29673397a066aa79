"""``docs/results.md`` and its plots from the grid's records (``bmfl.reproduce.run``).

Every number in the report comes from the records; the comparisons with the papers are
computed from them too, so a miss shows up as a miss."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bmfl.data import load_dataset  # noqa: E402
from bmfl.plots import accuracy_axis, legend_outside, round_axis, setting, styles  # noqa: E402
from bmfl.partition import make_partition  # noqa: E402
from bmfl.reproduce import paper  # noqa: E402
from bmfl.reproduce.fmt import num, pct  # noqa: E402
from bmfl.simulation.pipeline import choose_attackers  # noqa: E402
from bmfl.reproduce.grid import (  # noqa: E402
    BAFDP_ATTACKS, BAFDP_INPUT_CLIP, BAFDP_INPUT_SIGMAS, BAFDP_MODES, BAFDP_PRIVATE_RULE, BAFDP_RULES, BAFDP_TARGET,
    BAFDP_TRAINING, ATTACK_FRACTIONS, BACKDOOR, BMFL_ATTACKS, BMFL_METHODS, BMFL_TRAINING, FBFL_ATTACKS, FBFL_RULES, FBFL_TRAINING,
    FEDAUX_ALPHA, FEDAUX_METHODS, FEDAUX_TARGET, FEDAUX_TRAINING, IDEAL, LSTM, NO_DP_LR, SEED, TRAFFIC_RULES,
    TRAFFIC_TRAINING, Scale, bafdp_key, bafdp_seeds, fedaux_key, fedaux_seeds, fig6_key,
)
from bmfl.simulation.output import cost_to_target  # noqa: E402

Records = dict[str, dict[str, Any]]


class Report:
    """Accessors over the records plus the markdown being built."""

    def __init__(self, records: Records, scale: Scale, figures: Path) -> None:
        self.records = records
        self.scale = scale
        self.figures = figures
        self.lines: list[str] = []
        self.drawn: dict[str, Any] = {}  # file name → its matplotlib figure (closed, still readable)
        self.checks: list[tuple[str, str, str, bool | None]] = []  # claim, paper, ours, agrees

    def rows(self, key: str) -> list[dict[str, Any]]:
        return self.records[key]["rows"]

    def final(self, key: str) -> dict[str, Any]:
        return self.rows(key)[-1]

    def acc(self, key: str) -> float:
        return self.final(key)["accuracy"]

    def settled(self, key: str) -> float:
        """Mean accuracy of the last ``scale.settle_rounds`` rounds: what a run achieves,
        not one noisy round (DP noise moves single rounds by several points)."""
        last = self.rows(key)[-self.scale.settle_rounds :]
        return sum(r["accuracy"] for r in last) / len(last)

    def total(self, key: str, field: str) -> int:
        return sum(r[field] for r in self.rows(key))

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        self.add(*("| " + " | ".join(r) + " |" for r in rows))
        self.add("")

    def check(self, claim: str, paper_says: str, ours: str, agrees: bool | None) -> None:
        self.checks.append((claim, paper_says, ours, agrees))

    def figure(self, fig, name: str, caption: str) -> None:
        self.drawn[name] = fig
        fig.tight_layout()
        fig.savefig(self.figures / name, dpi=110)
        plt.close(fig)
        self.add(f"![{caption}](results/{name})", "")


def _curve(ax, rep: Report, key: str, field: str, label: str, **style) -> None:
    rows = rep.rows(key)
    ax.plot([r["round"] for r in rows], [r[field] for r in rows], label=label, **style)


def fig5(rep: Report) -> None:
    s = rep.scale
    rep.add("## BMFL Fig. 5: accuracy vs rounds, with and without DP", "",
            f"Complete non-IID MNIST, {s.vehicles} vehicles on {s.edges} edges, no attacker, {s.bmfl_rounds} rounds. "
            f"DP: σ = {BMFL_TRAINING['noise_multiplier']}, C = {BMFL_TRAINING['clip']}, δ = {BMFL_TRAINING['delta']}; "
            f"ε is the RDP accountant's, per vehicle, maximum over vehicles. Without DP, η = {NO_DP_LR} "
            f"(η = {BMFL_TRAINING['lr']} oscillates on unclipped gradients).", "")
    rows = []
    for m in BMFL_METHODS:
        dp, nodp = f"fig5/dp/{m}", f"fig5/no_dp/{m}"
        rows.append([m, pct(rep.acc(dp)), f"{rep.final(dp)['epsilon_max']:.2f}", pct(rep.acc(nodp))])
        rep.check(f"Fig. 5 ({m}): DP lowers the accuracy", "DP curves lie below the non-DP ones",
                  f"{pct(rep.acc(dp))} with DP vs {pct(rep.acc(nodp))} without", rep.acc(dp) < rep.acc(nodp))
    rep.table(["method", f"accuracy with DP (round {s.bmfl_rounds})", "ε spent (max)", "accuracy without DP"], rows)
    last = rep.final("fig5/dp/BMFL")
    rep.add(f"Upstream to the cloud per round (double aggregation): d·L = {last['upstream_bytes_cloud'] / 1e3:.0f} kB "
            f"instead of d·K = {last['upstream_bytes_flat'] / 1e3:.0f} kB for a flat server.", "")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, dp in zip(axes, ("dp", "no_dp")):
        for m, style in zip(BMFL_METHODS, styles()):
            _curve(ax, rep, f"fig5/{dp}/{m}", "accuracy", m, **style)
        dp_text = f"σ = {BMFL_TRAINING['noise_multiplier']}, C = {BMFL_TRAINING['clip']}" if dp == "dp" else None
        ax.set_title(setting(None, 0.0, "each method", dp_text), fontsize=9)
        round_axis(ax)
        accuracy_axis(ax)
    legend_outside(axes[1])
    fig.suptitle("BMFL Fig. 5: complete non-IID MNIST, no attacker", fontsize=10)
    rep.figure(fig, "fig5.png", "Fig. 5 reproduction")


def fig6(rep: Report) -> None:
    s = rep.scale
    fractions = (0.0, *ATTACK_FRACTIONS)
    rep.add("## BMFL Fig. 6: sign-flip and same-value attackers", "",
            f"Complete non-IID, DP on, accuracy achieved: the mean over rounds {s.bmfl_rounds - s.settle_rounds + 1}–{s.bmfl_rounds}. Attackers are drawn once per fraction "
            "by the seed from the whole fleet (the same vehicles for both attacks) and attack every round. "
            "Sign flip: w^{r-1} + γΔ, γ = −10; same value: every parameter 100. "
            f"*{IDEAL}* is a reference, not a defence: the edges drop exactly the attackers' uploads and FedAvg "
            "the rest, i.e. the accuracy the honest vehicles' data alone reaches.", "")
    methods = (*BMFL_METHODS, IDEAL)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, attack in zip(axes, BMFL_ATTACKS):
        rep.add(f"### {attack}", "")
        rep.table(["method", *(f"{int(100 * f)} %" for f in fractions)],
                  [[m, *(pct(rep.settled(fig6_key(attack, f, m))) for f in fractions)] for m in methods])
        det = []
        for f in ATTACK_FRACTIONS:
            key = f"fig6/{attack}/{f}/BMFL"
            honest = rep.total(key, "trainers") - rep.total(key, "attackers_selected")
            shares = [sum(r["attacker_weight"] for r in rep.rows(f"fig6/{attack}/{f}/{m}")) / len(rep.rows(key))
                      for m in BMFL_METHODS]
            det.append([f"{int(100 * f)} %", f"{rep.total(key, 'attackers_flagged')}/{rep.total(key, 'attackers_selected')}",
                        f"{rep.total(key, 'honest_flagged')}/{honest}", *(pct(x) for x in shares),
                        pct(rep.records[key]["payout_share_attackers"])])
        rep.table(["attackers", "BMFL: attackers flagged", "BMFL: honest flagged",
                   *(f"{m}: weight to attackers" for m in BMFL_METHODS), "BMFL: payouts to attackers"], det)
        for m, style in zip(methods, styles()):
            ax.plot([100 * f for f in fractions], [rep.settled(fig6_key(attack, f, m)) for f in fractions], label=m, **style)
        dp_text = f"σ = {BMFL_TRAINING['noise_multiplier']}, C = {BMFL_TRAINING['clip']}"
        ax.set_title(f"attack: {attack}, share on the x axis · defence: each method · DP {dp_text}", fontsize=9)
        ax.set_xlabel("attackers (%)")
        ax.set_xticks([0, 20, 40, 60])
        ax.grid(alpha=0.3)
        accuracy_axis(ax, f"test accuracy, rounds {s.bmfl_rounds - s.settle_rounds + 1}–{s.bmfl_rounds}")
    legend_outside(axes[1])
    rep.figure(fig, "fig6.png", "Fig. 6 reproduction")
    honest_data(rep)
    acceptance(rep)
    paper.fig6_checks(rep)


def honest_data(rep: Report) -> None:
    """Share of each digit's training images that the honest vehicles hold: what any
    defence that drops the attackers is left to learn from."""
    s = rep.scale
    train, _ = load_dataset(s.mnist)
    hist = make_partition("complete_non_iid", train.y, s.vehicles, SEED).label_histograms(train.y, 10)
    rows = []
    for f in ATTACK_FRACTIONS:
        attackers = choose_attackers(s.vehicles, f, SEED)
        honest = [v for v in range(s.vehicles) if v not in attackers]
        share = hist[honest].sum(0) / hist.sum(0)
        rows.append([f"{int(100 * f)} %", *(f"{100 * float(x):.0f} %" for x in share)])
    rep.add("Complete non-IID gives each vehicle two digits, so the attackers take whole digits' data with them. "
            "Share of each digit's training images held by the honest vehicles:", "")
    rep.table(["attackers", *(str(d) for d in range(10))], rows)


def acceptance(rep: Report) -> None:
    rep.add("### Acceptance: BMFL keeps ≥ 90 % of its clean accuracy at 60 % attackers; FedAvg does not", "")
    rows = []
    for attack in BMFL_ATTACKS:
        for m in ("BMFL", "FedAvg"):
            clean, attacked = rep.settled(fig6_key(attack, 0.0, m)), rep.settled(fig6_key(attack, 0.6, m))
            ratio = attacked / clean
            ideal = rep.settled(fig6_key(attack, 0.6, IDEAL))
            ok = ratio >= 0.9 if m == "BMFL" else ratio < 0.9
            rows.append([attack, m, pct(clean), pct(attacked), pct(ratio), pct(attacked / ideal),
                         ("met" if ok else "**MISSED**")])
    rep.table(["attack (60 %)", "method", "clean accuracy", "accuracy under attack", "kept", f"of the {IDEAL}'s",
               "target"], rows)


def fig7(rep: Report) -> None:
    s = rep.scale
    marks = [r for r in (1, 10, 20, 30, 40, 50) if r <= s.backdoor_rounds]
    rep.add("## BMFL Fig. 7: backdoor attack success over the rounds", "",
            f"Dirichlet(0.9) partition, DP on, {int(100 * s.backdoor_fraction)} % attackers in every round. "
            f"Pixel-pattern trigger (4×4 checkerboard), target label {BACKDOOR['target']}, "
            f"{int(100 * BACKDOOR['poison_fraction'])} % of each attacker's images poisoned, "
            f"η_a = {BACKDOOR['lr']}, E_a = {BACKDOOR['epochs']} full epochs, "
            f"{'without' if BACKDOOR.get('dp') is False else 'with'} DP. "
            "Backdoor success = share of "
            "triggered test images of other digits classified as the target.", "")
    rows = []
    fig, ax = plt.subplots(figsize=(8, 3.8))
    style = styles()
    for m in ("FedAvg", "BMFL"):
        key = f"fig7/{m}"
        by_round = {r["round"]: r for r in rep.rows(key)}
        rows.append([m, *(pct(by_round[t]["attack_success_rate"]) for t in marks), pct(rep.acc(key)),
                     f"{rep.total(key, 'attackers_flagged')}/{rep.total(key, 'attackers_selected')}"])
        _curve(ax, rep, key, "attack_success_rate", f"{m}: backdoor success", **next(style))
        _curve(ax, rep, key, "accuracy", f"{m}: test accuracy", **next(style))
    rep.table(["method", *(f"round {t}" for t in marks), "final accuracy", "attackers flagged"], rows)
    key = "fig7/BMFL"
    rep.add(f"BMFL's self-reliability filter flagged {rep.total(key, 'attackers_flagged')} of "
            f"{rep.total(key, 'attackers_selected')} backdoor uploads. Eq. 11 rewards a high test accuracy and a "
            "small distance D to w^{r-1}; a backdoor model trained on half clean data is accurate, and an attacker "
            "that skips DP lacks the noise that moves every honest upload away from w^{r-1}, so the filter ranks "
            "it as at least as reliable as the honest vehicles.", "")
    round_axis(ax)
    accuracy_axis(ax, "share of test images")
    dp_text = f"σ = {BMFL_TRAINING['noise_multiplier']}, C = {BMFL_TRAINING['clip']}"
    ax.set_title(setting("backdoor", s.backdoor_fraction, "FedAvg vs BMFL", dp_text), fontsize=9)
    legend_outside(ax)
    rep.figure(fig, "fig7.png", "Fig. 7 reproduction")
    paper.fig7_checks(rep)


def fbfl(rep: Report) -> None:
    s = rep.scale
    rep.add("## FBFL: clients, local epochs, data distribution, aggregation rules, attacks", "",
            f"Flat FL (one server), no DP, {s.fbfl_rounds} rounds, η = {FBFL_TRAINING['lr']}, "
            f"β = {FBFL_TRAINING['momentum']}, B = {FBFL_TRAINING['batch_size']}, E = 1 unless varied, "
            f"{s.fbfl_clients} clients unless varied, IID unless varied. Attacks: 20 % of the clients; model poisoning "
            "= Gaussian noise upload (w^{r-1} + N(0, 1)); data poisoning = N(0, 3²) noise on every input image "
            "(normalised units), true labels; label flipping = y ↦ 9 − y. Trimmed mean drops the largest and the "
            "smallest value per coordinate (β = 1, as FBFL describes); Krum with f = ⌊(n − 3)/2⌋.", "")
    last = f"accuracy (round {s.fbfl_rounds})"
    rep.add("### Number of clients (IID, FedAvg)", "")
    rep.table(["clients", last, "test loss"],
              [[str(n), pct(rep.acc(f"fbfl/clients/{n}")), num(rep.final(f"fbfl/clients/{n}")["loss"])]
               for n in s.fbfl_client_counts])
    rep.add("### Local epochs (IID, FedAvg)", "")
    rep.table(["E", "accuracy (round 1)", last, "test loss"],
              [[str(e), pct(rep.rows(f"fbfl/epochs/{e}")[0]["accuracy"]), pct(rep.acc(f"fbfl/epochs/{e}")),
                num(rep.final(f"fbfl/epochs/{e}")["loss"])] for e in s.fbfl_epochs])
    rep.add("### Data distribution and aggregation rule (no attack)", "")
    rep.table(["rule", "IID accuracy", "IID loss", "non-IID accuracy", "non-IID loss"],
              [[rule, pct(rep.acc(f"fbfl/rules/IID/{rule}")), num(rep.final(f"fbfl/rules/IID/{rule}")["loss"]),
                pct(rep.acc(f"fbfl/rules/non-IID/{rule}")), num(rep.final(f"fbfl/rules/non-IID/{rule}")["loss"])]
               for rule in FBFL_RULES])
    rep.add("### Attacks (IID, 20 % attackers): accuracy / test loss", "")
    rep.table(["attack", *FBFL_RULES],
              [["none", *(f"{pct(rep.acc(f'fbfl/rules/IID/{r}'))} / {num(rep.final(f'fbfl/rules/IID/{r}')['loss'])}"
                          for r in FBFL_RULES)]]
              + [[a, *(f"{pct(rep.acc(f'fbfl/attacks/{a}/{r}'))} / {num(rep.final(f'fbfl/attacks/{a}/{r}')['loss'])}"
                       for r in FBFL_RULES)] for a in FBFL_ATTACKS])
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), sharey=True)
    axes = axes.flat
    for n, style in zip(s.fbfl_client_counts, styles()):
        _curve(axes[0], rep, f"fbfl/clients/{n}", "accuracy", f"{n} clients", **style)
    for e, style in zip(s.fbfl_epochs, styles()):
        _curve(axes[1], rep, f"fbfl/epochs/{e}", "accuracy", f"E = {e}", **style)
    for (dist, rule), style in zip(((d, r) for d in ("IID", "non-IID") for r in FBFL_RULES), styles()):
        _curve(axes[2], rep, f"fbfl/rules/{dist}/{rule}", "accuracy", f"{rule} ({dist})", **style)
    for a, style in zip(FBFL_ATTACKS, styles()):
        _curve(axes[3], rep, f"fbfl/attacks/{a}/FedAvg", "accuracy", f"FedAvg, {a}", **style)
    titles = (setting(None, 0.0, "FedAvg", None) + ", clients varied", setting(None, 0.0, "FedAvg", None) + ", epochs varied",
              setting(None, 0.0, "each rule", None) + ", IID vs non-IID", "attack: each, 20% · defence: FedAvg · no DP")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        round_axis(ax)
        accuracy_axis(ax)
        legend_outside(ax, fontsize=7)
    rep.figure(fig, "fbfl.png", "FBFL reproduction")
    paper.fbfl_checks(rep)


def traffic(rep: Report) -> None:
    s = rep.scale
    rep.add("## `001`: LSTM traffic forecasting under tuning-and-scaling poisoning", "",
            f"Synthetic hourly traffic of {s.traffic_cells} cells (base stations), 28 days, the last 7 for testing; "
            "inputs are 3 closeness + 3 period values of log1p-standardised traffic. Flat FL: 10 cells sampled per "
            f"round, {s.traffic_rounds} rounds, one local epoch of momentum SGD (η = {TRAFFIC_TRAINING['lr']}, "
            f"β = {TRAFFIC_TRAINING['momentum']}, B = {TRAFFIC_TRAINING['batch_size']}), LSTM "
            f"{LSTM['num_layers']}×{LSTM['hidden_size']}. 20 % of the cells "
            "are attackers (Alg. 2: start from w^{r-2}, maximise the MSE at η/10, scale). Without anomaly detection "
            "γ = 1000; with it (AD: flag ‖Δ‖ > 40·μ or > μ + 400·σ) the attackers scale to "
            "min(a1‖Δ_prev‖, a2 + ‖Δ_prev‖) to pass it. Multi-Krum q = 2, m = 6; trimmed mean β = 2. Test MSE and MAE "
            "are on the standardised scale, so only ratios compare with the paper (Telecom Italia, Milan Internet "
            "column of its Table I).", "")
    rows, fig = [], plt.figure(figsize=(9, 3.8))
    ax = fig.gca()
    keys = [("no attack", "FedAvg")] + [(setting, rule) for setting in ("attack", "attack + AD") for rule in TRAFFIC_RULES]
    for setting, rule in keys:
        key = f"traffic/{setting}/{rule}"
        ref = paper.TRAFFIC_TABLE.get((setting, rule))
        final = rep.final(key)
        rows.append([setting, rule, num(final["loss"]), num(final["mae"]),
                     f"{rep.total(key, 'attackers_flagged')}/{rep.total(key, 'attackers_selected')}",
                     str(rep.total(key, "honest_flagged")), "—" if ref is None else f"{ref[0]:.4g} / {ref[1]:.4g}"])
        _curve(ax, rep, key, "loss", f"{rule}, {setting}", linestyle="-" if setting != "attack" else "--", marker=".")
    rep.table(["setting", "rule", "test MSE", "test MAE", "attackers flagged", "honest flagged",
               "paper MSE / MAE (Milan Internet)"], rows)
    ax.set_yscale("log")
    round_axis(ax)
    ax.set_ylabel("test MSE")
    ax.set_title("attack: tuning-and-scaling 20% or none · defence: each rule, ± anomaly detection · no DP", fontsize=9)
    legend_outside(ax, fontsize=6)
    rep.figure(fig, "traffic.png", "001 reproduction")
    paper.traffic_checks(rep)


def fedaux(rep: Report) -> None:
    s, t = rep.scale, FEDAUX_TRAINING
    target = FEDAUX_TARGET
    rep.add("## FedAuxHMTL: multi-task traffic classification", "",
            f"Seed `002`, at a scale that runs in a few CPU-minutes: {s.fedaux_vehicles} vehicles on {s.fedaux_edges} "
            f"edges, {s.fedaux_flows:,} synthetic flows (`flows_synthetic`: five applications, 80 % for training, "
            f"dealt by Dirichlet(α = {FEDAUX_ALPHA}) so vehicles and edges are non-IID), FedAvg at the edges and the "
            f"cloud, every vehicle trains every round: E = {t['epochs']}, at most {t['max_steps']} steps, "
            f"B = {t['batch_size']}, η = {t['lr']}, β = {t['momentum']}, no DP. FedAuxHMTL is `mtl_cnn1d` (shared "
            "1D-CNN backbone, main head and two regression heads for the flow's volume and duration, random loss "
            "weighting); FedAvg is `cnn1d`, the same backbone and main head alone. Each run stops at the target "
            f"accuracy {pct(target)} or after {s.fedaux_rounds} rounds. Megabytes are every blob moved (vehicles' "
            "uploads and downloads, edges' preliminaries, measured from the encoded blobs); compute is the "
            "vehicles' training CPU seconds.", "",
            "Deviations from the paper: synthetic flows instead of the QUIC dataset; a target of "
            f"{pct(target)} instead of 80 % (the single-task model trained centrally on all the data settles near "
            "68 %); far fewer devices and rounds; random weights drawn per step but shared by the vehicles "
            "([`multitask.md`](multitask.md)); the paper's megabytes and seconds are for its own model and hardware, so only "
            "the orderings compare.", "")
    seeds = fedaux_seeds(s)
    costs = {m: [cost_to_target(rep.rows(fedaux_key(m, seed)), target) for seed in seeds] for m in FEDAUX_METHODS}
    rounds_run = {m: [len(rep.rows(fedaux_key(m, seed))) for seed in seeds] for m in FEDAUX_METHODS}
    rows = []
    for m in FEDAUX_METHODS:
        first, ref = costs[m][0], paper.FEDAUX[m]
        reached = str(first.rounds) if first.rounds is not None else f"not reached in {rounds_run[m][0]}"
        rounds = [c.rounds if c.rounds is not None else math.inf for c in costs[m]]
        spread = f"{_median(rounds):g} [{min(rounds):g}–{max(rounds):g}]"
        mb = [c.megabytes for c in costs[m]]
        rows.append([m, reached, f"{first.megabytes:.1f}", f"{first.megabytes_vehicles:.1f}", f"{first.compute_s:.1f}",
                     pct(rep.acc(fedaux_key(m, SEED))), spread, f"{_median(mb):.1f} [{min(mb):.1f}–{max(mb):.1f}]",
                     f"{ref[0]} / {ref[1]} MB / {ref[2]} s"])
    first_costs = {m: c[0] for m, c in costs.items()}
    per_round = {m: c.compute_s / (c.rounds or rounds_run[m][0]) for m, c in first_costs.items()}
    cpu = sum(rep.records[fedaux_key(m, seed)]["cpu_s"] for m in FEDAUX_METHODS for seed in seeds)
    cost = f"The {len(FEDAUX_METHODS) * len(seeds)} runs cost {cpu / 60:.1f} CPU-minutes."
    if per_round["FedAvg"] > 0:
        cost += (f" Per round, a FedAuxHMTL vehicle spends {per_round['FedAuxHMTL'] / per_round['FedAvg']:.1f}× the "
                 "training CPU time of a single-task one (two more heads and a three-term loss on a small model); "
                 "whatever it saves comes from needing fewer rounds.")
    rep.add(cost, "")
    n = len(seeds)
    rep.table(["method", f"rounds to {pct(target)}", "MB moved to it", "of which vehicles", "vehicle compute (s)",
               "last accuracy", f"rounds, {n} seeds: median [min–max]", f"MB, {n} seeds", "paper to 80 %: rounds / MB / s"],
              rows)
    rep.add(f"The first five columns are seed {SEED}'s run (plotted); the two before the paper's give the median and "
            f"range over seeds {', '.join(map(str, seeds))} (∞: the target was not reached).", "")
    fig = plt.figure(figsize=(8, 3.6))
    ax = fig.gca()
    for m, style in zip(FEDAUX_METHODS, styles()):
        _curve(ax, rep, f"fedaux/{m}", "accuracy", m, **style)
    ax.axhline(target, color="grey", linestyle=":", label="target")
    round_axis(ax)
    accuracy_axis(ax, "test accuracy (main task)")
    ax.set_title(setting(None, 0.0, "FedAvg at edges and cloud", None) + ", non-IID flows", fontsize=9)
    legend_outside(ax, fontsize=7)
    rep.figure(fig, "fedaux.png", "FedAuxHMTL reproduction")
    paper.fedaux_checks(rep, costs, rounds_run)


def _spread(values: list[float]) -> str:
    """``median [min–max]`` of per-seed values (``diverged`` where a value is not finite)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return f"diverged on {len(values) - len(finite)}/{len(values)} seeds" + (f", else {num(_median(finite))}" if finite else "")
    if len(values) == 1:
        return num(values[0])
    return f"{num(_median(values))} [{num(min(values))}–{num(max(values))}]"


def time_to_rmse(rows: list[dict[str, Any]], target: float) -> float | None:
    """Simulated seconds of the first update whose test RMSE (standardised) is ≤ ``target``."""
    return next((r["sim_time_s"] for r in rows if math.sqrt(r["loss"]) <= target), None)


def bafdp(rep: Report) -> None:
    s, t = rep.scale, BAFDP_TRAINING
    seeds = bafdp_seeds(s)
    n = len(seeds)
    milan = rep.records[bafdp_key("sync/FedAvg", seeds[0])].get("data") == "traffic_telecom_italia"
    data = (f"{s.bafdp_cells} central Milan cells of the user's Telecom Italia files (`traffic_telecom_italia`, hourly "
            "Internet traffic" if milan else f"{s.bafdp_cells} cells of synthetic hourly traffic (`traffic_synthetic`, "
            "28 days")  # fmt: skip
    rep.add("## BAFDP: MLP traffic prediction, sync and async, under attack and with input DP", "",
            f"Seed `000`, at a scale that runs in a few CPU-minutes: {data}, the last 7 days for testing), one "
            "vehicle per cell, flat FL; inputs are 3 "
            "closeness + 3 period values of log1p-standardised traffic, the model an MLP 6→64→64→1 "
            f"(`mlp_forecaster`); every vehicle trains one epoch per update (η = {t['lr']}, β = {t['momentum']}, "
            f"B = {t['batch_size']}), no DP-SGD. In every run 30 % of the vehicles are 5× slower on the simulated "
            f"clock. Sync: {s.bafdp_rounds} rounds, each waiting for its slowest vehicle. Async: "
            f"{2 * s.bafdp_rounds} updates, each from a buffer of S = {s.bafdp_cells // 2} reports (FedBuff "
            "weighting, τ_max = 4), so both modes train about the same number of local epochs. The rules: FedAvg, "
            "BAFDP's L1 sign rule (`sign_l1`, η = 1, λ = 10⁻³), the coordinate-wise median and BMFL's residual "
            "reweighting. RMSE and MAE are of the final model on the test days, on the original traffic scale "
            f"(the standardisation undone); each cell is the median [min–max] over seeds {', '.join(map(str, seeds))}.", "",
            "Deviations from the paper: " + ("Milan cells only, not Trento or LTE" if milan else "synthetic traffic "
            "instead of Milano, Trento and LTE (no cellular dataset ships offline; `bmfl reproduce --telecom-italia "
            "FILE` runs this section on Telecom Italia files)") + "; far fewer "
            "clients and rounds; no Wasserstein DRO term (the clients train plain MSE on the perturbed data); the L1 "
            "rule is its sign form (one server step per buffer, no dual variables, λ not tuned); BMFL's "
            "self-reliability filter needs a classification test set, so BMFL here is the reweighting rule alone; the "
            "attacks are sign flipping (γ = −10) and Gaussian noise (σ = 1) since the paper does not state its own; "
            "input DP perturbs each sample's standardised (x, y) once, clipped to C_x = "
            f"{BAFDP_INPUT_CLIP:g}, and ε is per sample (one measurement sits in up to 7 samples).", "")
    orig = lambda part, seed, field: (rep.records[bafdp_key(part, seed)]["original"] or {}).get(field, math.nan)  # noqa: E731
    rows = []
    for mode in BAFDP_MODES:
        for rule in BAFDP_RULES:
            part = f"{mode}/{rule}"
            rmse = [orig(part, seed, "rmse") for seed in seeds]
            rows.append([rule, mode, _spread(rmse), _spread([orig(part, seed, "mae") for seed in seeds]),
                         " · ".join(f"s{seed} {num(v)}" for seed, v in zip(seeds, rmse))])
    rep.add("### Accuracy of the rules, sync and async (no attack)", "")
    rep.table(["rule", "mode", "RMSE", "MAE", "RMSE per seed"], rows)

    rows = [["∞ (off)", "—", _spread([orig(f"async/{BAFDP_PRIVATE_RULE}", seed, "rmse") for seed in seeds]),
             _spread([orig(f"async/{BAFDP_PRIVATE_RULE}", seed, "mae") for seed in seeds])]]
    for sigma in BAFDP_INPUT_SIGMAS:
        part = f"privacy/{sigma:g}"
        eps = rep.final(bafdp_key(part, seeds[0]))["epsilon_max"]
        rows.append([num(eps), f"{sigma:g}", _spread([orig(part, seed, "rmse") for seed in seeds]),
                     _spread([orig(part, seed, "mae") for seed in seeds])])
    rep.add("### Accuracy vs privacy budget (input DP)", "",
            f"Async, {BAFDP_PRIVATE_RULE}; each vehicle releases its samples once through input DP (σ_x, C_x = "
            f"{BAFDP_INPUT_CLIP:g}) and trains on them without DP-SGD (post-processing), so ε at δ = 10⁻⁵ is the "
            "release's alone (`docs/algorithms.md` §1.3).", "")
    rep.table(["ε at δ = 1e-5", "σ_x", "RMSE", "MAE"], rows)

    fractions = (0.0, *s.bafdp_fractions)
    degradation: dict[tuple[str, str], list[list[float]]] = {}
    rows = []
    for attack in BAFDP_ATTACKS:
        for fraction in fractions:
            cells = []
            for rule in BAFDP_RULES:
                part = f"async/{rule}" if fraction == 0 else f"{attack}/{fraction:g}/{rule}"
                values = [orig(part, seed, "rmse") for seed in seeds]
                degradation.setdefault((attack, rule), []).append(values)
                cells.append(_spread(values))
            rows.append([attack, f"{fraction:.0%}", *cells])
    rep.add("### Degradation vs the Byzantine fraction", "",
            "Async; test RMSE (original scale) with 0 % (the clean async run) and the attackers' fraction of the "
            "vehicles; an attacker reports every time it is free, like the honest vehicles. A Gaussian attacker does "
            "not train, so its job takes no simulated time and every buffer holds all the attackers' reports: at 20 % "
            f"of {s.bafdp_cells} vehicles they are {2 * s.bafdp_cells // 10} of the S = {s.bafdp_cells // 2} reports "
            "of each buffer, a larger share than of the fleet.", "")
    rep.table(["attack", "attackers", *BAFDP_RULES], rows)

    rows, ratios = [], {}
    for rule in BAFDP_RULES:
        times = {mode: [] for mode in BAFDP_MODES}
        for seed in seeds:
            target = BAFDP_TARGET * math.sqrt(rep.final(bafdp_key("sync/FedAvg", seed))["loss"])
            for mode in BAFDP_MODES:
                reached = time_to_rmse(rep.rows(bafdp_key(f"{mode}/{rule}", seed)), target)
                times[mode].append(math.inf if reached is None else reached)
        ratio = [a / b for a, b in zip(times["async"], times["sync"]) if math.isfinite(b)]
        ratios[rule] = ratio
        rows.append([rule, *(_times(times[m]) for m in BAFDP_MODES), _spread(ratio) if ratio else "—"])
    rep.add("### Time to a target RMSE, sync vs async", "",
            f"Target per seed: {BAFDP_TARGET:g} × the sync FedAvg run's final test RMSE (standardised scale); simulated "
            "seconds until the first model that reaches it (∞: never within the run).", "")
    rep.table(["rule", "sync (s)", "async (s)", "async / sync"], rows)
    cpu = sum(r["cpu_s"] for k, r in rep.records.items() if k.startswith("bafdp/"))
    rep.add(f"The section's {sum(k.startswith('bafdp/') for k in rep.records)} runs cost {cpu / 60:.1f} CPU-minutes.", "")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for rule, style in zip(BAFDP_RULES, styles()):
        per_fraction = degradation[("sign_flip", rule)]
        medians = [_median(v) for v in per_fraction]
        low = [m - min(v) for m, v in zip(medians, per_fraction)]
        high = [max(v) - m for m, v in zip(medians, per_fraction)]
        left.errorbar([100 * f for f in fractions], medians, yerr=[low, high], label=rule, capsize=3, **style)
    left.set_yscale("log")
    left.set_ylim(0.1, 10.0)  # diverged runs leave the chart (the table gives them)
    left.set_xlabel("attackers (%)")
    left.set_xticks([100 * f for f in fractions])
    left.set_ylabel("test RMSE (original scale, ≤ 10 shown)")
    left.grid(alpha=0.3)
    left.set_title(setting("sign_flip", max(fractions), "each rule, async", None), fontsize=8)
    legend_outside(left, fontsize=7)
    for (mode, rule), style in zip([(m, r) for r in ("FedAvg", BAFDP_PRIVATE_RULE) for m in BAFDP_MODES], styles()):
        rows_ = rep.rows(bafdp_key(f"{mode}/{rule}", SEED))
        right.plot([r["sim_time_s"] for r in rows_], [math.sqrt(r["loss"]) for r in rows_], label=f"{rule}, {mode}", **style)
    right.set_xlabel("simulated time (s)")
    right.set_ylabel("test RMSE (standardised)")
    right.grid(alpha=0.3)
    right.set_title(setting(None, 0.0, "FedAvg or L1 sign", None) + f", seed {SEED}, 30 % 5× slower", fontsize=8)
    legend_outside(right, fontsize=7)
    rep.figure(fig, "bafdp.png", "BAFDP reproduction")
    clean = {rule: _median([orig(f"async/{rule}", seed, "rmse") for seed in seeds]) for rule in BAFDP_RULES}
    worst = {rule: _median(degradation[("sign_flip", rule)][-1]) for rule in BAFDP_RULES}
    l1, fedavg = BAFDP_PRIVATE_RULE, "FedAvg"
    rep.check(f"L1 rule resists Byzantine clients ({max(fractions):.0%} sign-flip, async)",
              "degradation grows with the fraction, L1 stays usable",
              f"RMSE ×{worst[l1] / clean[l1]:.2f} (L1) vs ×{worst[fedavg] / clean[fedavg]:.2f} (FedAvg)",
              worst[l1] / clean[l1] < worst[fedavg] / clean[fedavg])
    by_eps = sorted((rep.final(bafdp_key(f"privacy/{sigma:g}", seeds[0]))["epsilon_max"],
                     _median([orig(f"privacy/{sigma:g}", seed, "rmse") for seed in seeds])) for sigma in BAFDP_INPUT_SIGMAS)
    best = min(by_eps, key=lambda pair: pair[1])[0]
    rep.check("an intermediate privacy budget gives the best accuracy (input DP)", "accuracy peaks at an optimal ε",
              "median RMSE by ε: " + ", ".join(f"{e:.1f} → {num(r)}" for e, r in by_eps), best != by_eps[-1][0])
    async_faster = ratios[fedavg] and _median(ratios[fedavg]) < 1
    rep.check("asynchronous updates save time with stragglers", "faster training than waiting for all",
              f"FedAvg async / sync time to target: {_spread(ratios[fedavg]) if ratios[fedavg] else '—'} ({n} seeds)",
              bool(async_faster))


def _times(values: list[float]) -> str:
    return _spread(values) if all(math.isfinite(v) for v in values) else " · ".join(
        "∞" if not math.isfinite(v) else num(v) for v in values)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def comparison(rep: Report) -> None:
    rep.add("## Our numbers against the papers' claims", "",
            "Each line is computed from the runs above; *differs* means our measurement does not show what the "
            "paper reports.", "")
    verdict = {True: "agrees", False: "**differs**", None: "not comparable"}
    rep.table(["claim", "paper", "ours", "verdict"], [[c, p, o, verdict[a]] for c, p, o, a in rep.checks])


FIGURES: dict[str, Callable[[Report], None]] = {
    "fig5": fig5, "fig6": fig6, "fig7": fig7, "fbfl": fbfl, "traffic": traffic, "fedaux": fedaux, "bafdp": bafdp,
}  # fmt: skip
"""The report's sections by the name ``bmfl reproduce --only`` takes (also the first part
of their runs' keys in the grid)."""
SECTIONS: tuple[Callable[[Report], None], ...] = (*FIGURES.values(), comparison)


def run_prefixes(only: list[str]) -> set[str]:
    """The grid keys' first parts the sections ``only`` read (Fig. 6's 0 % is Fig. 5's DP run)."""
    return set(only) | ({"fig5"} if "fig6" in only else set())


def write_report(
    records: Records, scale: Scale, out: Path, timing: dict[str, float], command: str, only: list[str] | None = None
) -> Path:
    """Write ``out/results.md``, its PNGs and the raw records (``out/results/runs.jsonl``,
    first line: the grid's scale, timing and command); ``only`` names the sections
    (:data:`FIGURES`) to render, all by default."""
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    rep = Report(records, scale, figures)
    rep.add("# Reproduction of the seed papers' experiments", "",
            f"Generated by `{command}` ({scale.name} grid); do not edit by hand. The grid's "
            f"{len({r['fingerprint'] for r in records.values()})} distinct runs cost {timing['cpu_s'] / 60:.1f} "
            f"minutes of CPU time on one thread; this invocation took {timing['wall_s'] / 60:.1f} minutes wall "
            f"clock on a shared machine{_reused(timing)}. Every run is a `bmfl simulate` configuration "
            "(`bmfl/reproduce/grid.py`); the per-round metrics of all runs are in `results/runs.jsonl`.", "")
    paper.setting(rep)
    for section in [FIGURES[name] for name in only] + [comparison] if only else SECTIONS:
        section(rep)
    path = out / "results.md"
    path.write_text("\n".join(rep.lines).rstrip() + "\n", encoding="utf-8")
    with (figures / "runs.jsonl").open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"scale": scale.name, "timing": timing, "command": command}) + "\n")
        for key, rec in records.items():
            fh.write(json.dumps({"key": key, **rec}) + "\n")
    return path


def _reused(timing: dict[str, float]) -> str:
    n = int(timing.get("reused", 0))
    return f" and reused {n} unchanged runs from the previous one" if n else ""


def read_records(path: Path) -> tuple[Records, str, dict[str, float], str]:
    """The records, scale name, timing and command saved by :func:`write_report`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    meta = json.loads(lines[0])
    records = {}
    for line in lines[1:]:
        rec = json.loads(line)
        records[rec.pop("key")] = rec
    return records, meta["scale"], meta["timing"], meta["command"]
