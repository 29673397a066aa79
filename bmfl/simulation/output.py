"""Run outputs: metrics as JSON lines and CSV, a PNG plot, a rich table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from bmfl.simulation.runner import RoundMetrics, SimulationResult  # noqa: E402

FLAT_FIELDS = [
    "round", "accuracy", "loss", "mae", "leader", "trainers", "epsilon_max", "epsilon_mean",
    "upstream_bytes_cloud", "upstream_bytes_flat", "wall_time_s",
]


def write_outputs(result: SimulationResult, folder: str | Path) -> dict[str, Path]:
    """Write ``metrics.jsonl``, ``metrics.csv``, ``config.json`` and ``accuracy.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paths = {
        "jsonl": folder / "metrics.jsonl",
        "csv": folder / "metrics.csv",
        "config": folder / "config.json",
        "plot": folder / "accuracy.png",
    }
    paths["jsonl"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FLAT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["config"].write_text(result.config.model_dump_json(indent=2))
    plot_rounds(result, paths["plot"])
    return paths


def plot_rounds(result: SimulationResult, path: Path) -> None:
    rounds = [r.round for r in result.rounds]
    classification = result.rounds[0].accuracy is not None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r.accuracy if classification else r.loss for r in result.rounds], marker="o", label="global")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy" if classification else "test MSE")
    ax.set_title(f"{result.config.name}: {result.config.vehicles} vehicles, {result.config.edges} edges")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def round_line(m: RoundMetrics) -> str:
    score = f"accuracy {m.accuracy:.4f}" if m.accuracy is not None else f"MSE {m.loss:.4f}  MAE {m.mae:.4f}"
    eps = f"  ε max {m.epsilon_max:.2f}" if m.epsilon_max is not None else ""
    return f"round {m.round:3d}  {score}  leader edge {m.leader}  trainers {m.trainers}{eps}  {m.wall_time_s:.1f}s"


def summary_table(result: SimulationResult) -> Table:
    table = Table(title=f"{result.config.name}: per-round results")
    for col in ("round", "accuracy / MSE", "edge scores", "leader", "ε max", "upstream to cloud", "time"):
        table.add_column(col, justify="right")
    for m in result.rounds:
        table.add_row(
            str(m.round),
            f"{m.accuracy:.4f}" if m.accuracy is not None else f"{m.loss:.4f}",
            " ".join(f"{a:.3f}" for a in m.edge_accuracies),
            str(m.leader),
            f"{m.epsilon_max:.2f}" if m.epsilon_max is not None else "—",
            f"{m.upstream_bytes_cloud / 1e3:.0f} kB (flat {m.upstream_bytes_flat / 1e3:.0f} kB)",
            f"{m.wall_time_s:.1f}s",
        )
    return table
