"""Run outputs: metrics as JSON lines and CSV, contributions and payouts as JSON, a PNG
plot, a rich table and a one-line summary."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from rich.table import Table  # noqa: E402

from bmfl.plots import accuracy_axis, dp_setting, legend_outside, round_axis, setting, styles  # noqa: E402
from bmfl.simulation.runner import RoundMetrics, SimulationResult  # noqa: E402

FLAT_FIELDS = [
    "round", "accuracy", "loss", "mae", "attack_success_rate", "leader", "trainers",
    "attackers_selected", "attackers_flagged", "attackers_missed", "honest_flagged", "attacker_weight",
    "handovers", "rolled_back_to", "epsilon_max", "epsilon_mean", "upstream_bytes_cloud", "upstream_bytes_flat",
    "bytes_up_vehicles", "bytes_down_vehicles", "bytes_up_edges", "bytes_down_edges", "bytes_up_cloud",
    "bytes_down_cloud", "compute_s_vehicles", "compute_s_vehicle_max", "wall_time_s", "sim_time_s", "stale_refused",
    "staleness_mean",
]


@dataclass(frozen=True)
class CostToTarget:
    """What a run spent up to the first round whose global accuracy reached a target
    (``rounds`` None: never reached; the figures then cover the whole run)."""

    target: float
    rounds: int | None
    megabytes: float  # every blob moved (vehicles' up + down, edges' up, cloud's up), 10^6 bytes
    megabytes_vehicles: float  # the vehicles' up + down
    compute_s: float  # the vehicles' training seconds
    sim_time_s: float = 0.0  # simulated wall clock (bmfl.simulation.stragglers) at that round

    def line(self) -> str:
        reached = f"{self.rounds} rounds" if self.rounds is not None else "not reached"
        return (f"to accuracy {self.target:.2f}: {reached}, {self.sim_time_s:.2f} s simulated, "
                f"{self.megabytes:.2f} MB moved ({self.megabytes_vehicles:.2f} MB by vehicles), "
                f"{self.compute_s:.1f} s vehicle compute")


def cost_to_target(rows: Sequence[Mapping], target: float) -> CostToTarget:
    """Rounds, bytes and vehicle compute up to ``target`` accuracy, from per-round rows
    (``SimulationResult.rows()``). Every byte is sent once and received once, so the
    bytes moved are the bytes everyone sent. Fields a row lacks count as 0."""
    reached = next((r["round"] for r in rows if (r["accuracy"] or 0.0) >= target), None)
    upto = [r for r in rows if reached is None or r["round"] <= reached]
    sent = sum(r.get("bytes_up_vehicles", 0) + r.get("bytes_up_edges", 0) + r.get("bytes_up_cloud", 0) for r in upto)
    vehicles = sum(r.get("bytes_up_vehicles", 0) + r.get("bytes_down_vehicles", 0) for r in upto)
    compute = sum(r.get("compute_s_vehicles", 0.0) for r in upto)
    return CostToTarget(target, reached, sent / 1e6, vehicles / 1e6, compute, upto[-1].get("sim_time_s", 0.0) if upto else 0.0)


def write_outputs(result: SimulationResult, folder: str | Path) -> dict[str, Path]:
    """Write ``metrics.jsonl``, ``metrics.csv``, ``config.json``, ``payouts.json`` and
    ``accuracy.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paths = {
        "jsonl": folder / "metrics.jsonl",
        "csv": folder / "metrics.csv",
        "config": folder / "config.json",
        "payouts": folder / "payouts.json",
        "plot": folder / "accuracy.png",
    }
    paths["jsonl"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FLAT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["config"].write_text(result.config.model_dump_json(indent=2))
    paths["payouts"].write_text(json.dumps(payout_record(result), indent=2))
    plot_rounds(result, paths["plot"])
    return paths


def payout_record(result: SimulationResult) -> dict:
    """Contributions per (edge, vehicle) and the payout split, in wei (JSON keys are strings)."""
    p = result.payouts
    return {
        "attackers": result.attackers,
        "contributions": {str(e): {str(v): c for v, c in per.items()} for e, per in result.contributions.items()},
        "vehicle_payouts_wei": {str(v): w for v, w in sorted(p.vehicles.items())},
        "edge_shares_wei": {str(e): w for e, w in p.edge_shares.items()},
        "block_rewards_wei": {str(e): w for e, w in p.block_rewards.items()},
        "dust_wei": p.dust,
        "escrow_wei": result.config.reward_wei,
    }


def plot_rounds(result: SimulationResult, path: Path) -> None:
    fig = rounds_figure(result)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rounds_figure(result: SimulationResult) -> Figure:
    """Accuracy (or test MSE) per round, with the attack's success at its own goal when it has
    one (``Attack.success_rate``: a backdoor, a targeted flip)."""
    config = result.config
    rounds = [r.round for r in result.rounds]
    classification = result.rounds[0].accuracy is not None
    fig, ax = plt.subplots(figsize=(8, 4))
    style = styles()
    ax.plot(rounds, [r.accuracy if classification else r.loss for r in result.rounds], label="global model", **next(style))
    if result.rounds[0].attack_success_rate is not None:
        ax.plot(rounds, [r.attack_success_rate for r in result.rounds], label=f"{config.attack.name} success", **next(style))
    round_axis(ax)
    if classification:
        accuracy_axis(ax)
    else:
        ax.set_ylabel("test MSE")
        ax.set_yscale("log")
    what = setting(config.attack.name, config.attack.fraction, config.aggregation.describe(), dp_setting(config.training))
    ax.set_title(f"{config.name}: {config.vehicles} vehicles, {config.edges} edges\n{what}", fontsize=9)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _score(m: RoundMetrics) -> str:
    return f"accuracy {m.accuracy:.4f}" if m.accuracy is not None else f"MSE {m.loss:.4g}  MAE {m.mae:.4g}"


def round_line(m: RoundMetrics) -> str:
    eps = f"  ε max {m.epsilon_max:.2f}" if m.epsilon_max is not None else ""
    asr = f"  attack success {m.attack_success_rate:.3f}" if m.attack_success_rate is not None else ""
    att = f"  attackers flagged {m.attackers_flagged}/{m.attackers_selected}" if m.attackers_selected else ""
    return (f"round {m.round:3d}  {_score(m)}{asr}  leader edge {m.leader}  trainers {m.trainers}{att}"
            f"  honest flagged {m.honest_flagged}{eps}  {m.wall_time_s:.1f}s")


def summary_line(result: SimulationResult) -> str:
    """One line: final score, attack outcome, ε, upstream saving, payouts to attackers."""
    final = result.final
    rounds = result.rounds
    parts = [f"{result.config.name}: {len(rounds)} rounds, final {_score(final)}"]
    if final.attack_success_rate is not None:
        parts.append(f"{result.config.attack.name} success {final.attack_success_rate:.3f}")
    selected = sum(r.attackers_selected for r in rounds)
    if selected:
        parts.append(f"attackers flagged {sum(r.attackers_flagged for r in rounds)}/{selected}")
    parts.append(f"honest wrongly flagged {sum(r.honest_flagged for r in rounds)}/{sum(r.trainers - r.attackers_selected for r in rounds)}")
    if result.epsilons:
        parts.append(f"ε ≤ {max(result.epsilons.values()):.2f} at δ={result.config.training.delta}")
    parts.append(f"upstream to cloud {sum(r.upstream_bytes_cloud for r in rounds) / 1e6:.1f} MB "
                 f"(flat {sum(r.upstream_bytes_flat for r in rounds) / 1e6:.1f} MB)")
    payouts = result.payouts
    if payouts is not None and payouts.vehicles:
        paid = sum(payouts.vehicles.values())
        to_attackers = sum(w for v, w in payouts.vehicles.items() if v in set(result.attackers))
        parts.append(f"payouts to attackers {100 * to_attackers / paid if paid else 0:.1f} %")
    if result.config.target_accuracy is not None:
        parts.append(cost_to_target(result.rows(), result.config.target_accuracy).line())
    else:
        moved = sum(r.bytes_up_vehicles + r.bytes_up_edges + r.bytes_up_cloud for r in rounds)
        parts.append(f"{moved / 1e6:.1f} MB moved, {sum(r.compute_s_vehicles for r in rounds):.1f} s vehicle compute")
    parts.append(f"{sum(r.wall_time_s for r in rounds):.0f} s")
    return "; ".join(parts)


def summary_table(result: SimulationResult) -> Table:
    table = Table(title=f"{result.config.name}: per-round results")
    for col in ("round", "accuracy / MSE", "edge scores", "leader", "attackers flagged", "honest flagged",
                "ε max", "upstream to cloud", "vehicles up/down", "compute", "time"):
        table.add_column(col, justify="right")
    for m in result.rounds:
        table.add_row(
            str(m.round),
            f"{m.accuracy:.4f}" if m.accuracy is not None else f"{m.loss:.4g}",
            " ".join(f"{a:.3f}" for a in m.edge_accuracies),
            str(m.leader),
            f"{m.attackers_flagged}/{m.attackers_selected}",
            str(m.honest_flagged),
            f"{m.epsilon_max:.2f}" if m.epsilon_max is not None else "—",
            f"{m.upstream_bytes_cloud / 1e3:.0f} kB (flat {m.upstream_bytes_flat / 1e3:.0f} kB)",
            f"{m.bytes_up_vehicles / 1e3:.0f}/{m.bytes_down_vehicles / 1e3:.0f} kB",
            f"{m.compute_s_vehicles:.1f}s",
            f"{m.wall_time_s:.1f}s",
        )
    return table
