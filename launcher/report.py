"""The demo's report: the task's rounds and payouts as Markdown with a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WEI_PER_ETH = 10**18


def plot_task(view: dict[str, Any], path: Path) -> None:
    rounds = list(range(1, len(view["accuracy"]) + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, view["accuracy"], marker="o", label="global model (median of edges)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    flagged = [len(view["flagged"].get(str(r), view["flagged"].get(r, []))) for r in rounds]
    twin = ax.twinx()
    twin.bar(rounds, flagged, alpha=0.25, color="tab:red", label="vehicles flagged")
    twin.set_ylabel("vehicles flagged")
    fig.legend(loc="lower right")
    ax.set_title(f"task {view['task_id']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folder: Path, view: dict[str, Any], payouts: list[dict[str, Any]], audit_ok: bool, setting: str) -> Path:
    """``report.md`` + ``accuracy.png`` in ``folder``; returns the Markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_task(view, folder / "accuracy.png")
    lines = [
        f"# BMFL demo: task {view['task_id']}", "", setting, "",
        f"Status **{view['status']}** after {view['rounds_finished']} rounds; "
        f"audit from chain data: **{'passed' if audit_ok else 'FAILED'}**.", "",
        "![accuracy](accuracy.png)", "", "## Rounds", "",
        "| round | accuracy | leader edge | flagged |", "|---|---|---|---|",
    ]  # fmt: skip
    for r, (acc, leader) in enumerate(zip(view["accuracy"], view["leaders"]), start=1):
        flagged = view["flagged"].get(str(r), view["flagged"].get(r, []))
        lines.append(f"| {r} | {acc:.4f} | {leader} | {', '.join(a[:10] for a in flagged) or '—'} |")
    lines += ["", "## Payouts (credited on chain)", "", "| payee | role | contribution | wei | ETH |", "|---|---|---|---|---|"]
    for p in payouts:
        lines.append(f"| {p['payee']} | {p['role']} | {p.get('contribution', '')} | {p['wei']} | {p['wei'] / WEI_PER_ETH:.6f} |")
    eps = view.get("epsilon_max")
    lines += ["", f"Largest ε spent by a vehicle: {eps:.2f}" if eps is not None else "No DP accounting reported.", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
