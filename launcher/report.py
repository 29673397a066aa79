"""The demo's report: the task's rounds and payouts as Markdown with a PNG plot. Vehicles
are named one way throughout — their checksum address — so that a vehicle flagged in a
round can be found in the payouts (a vehicle flagged in every round is listed with a
contribution of 0 and no payout)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bmfl.incentives import SCALE  # noqa: E402
from bmfl.plots import accuracy_axis, round_axis  # noqa: E402

WEI_PER_ETH = 10**18
_VEHICLE = re.compile(r"vehicle (\d+) (0x[0-9a-fA-F]{40}) @ edge (\d+)")
_EDGE = re.compile(r"edge (\d+) ")


def _flagged(view: dict[str, Any], r: int) -> list[str]:
    return view["flagged"].get(str(r), view["flagged"].get(r, []))


def task_figure(view: dict[str, Any], title: str) -> Figure:
    """Accuracy per round on a fixed 0–1 axis, vehicles flagged per round as bars."""
    rounds = list(range(1, len(view["accuracy"]) + 1))
    fig, ax = plt.subplots(figsize=(8, 4))
    twin = ax.twinx()
    twin.bar(rounds, [len(_flagged(view, r)) for r in rounds], alpha=0.25, color="tab:red", label="vehicles flagged")
    twin.set_ylabel("vehicles flagged")
    twin.yaxis.get_major_locator().set_params(integer=True)
    ax.plot(rounds, view["accuracy"], marker="o", label="global model (median of edges)")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    round_axis(ax)
    accuracy_axis(ax)
    lines, labels = ax.get_legend_handles_labels()
    bars, bar_labels = twin.get_legend_handles_labels()
    ax.legend(lines + bars, labels + bar_labels, loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0.0, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def payout_rows(
    comparisons: list[Any], contributions: dict[int, dict[int, int]], account: Callable[[int], str], attackers: set[str],
    leaders: list[int | None],
) -> list[dict[str, Any]]:
    """One row per vehicle and edge it trained at (its summed contribution θ and credit,
    0 when flagged every time), per edge's block rewards (the rounds it led) and the
    publisher's return."""
    credited = {(int(m[3]), int(m[1])): c.on_chain for c in comparisons if c.section == "vehicle payout" and (m := _VEHICLE.match(c.subject))}
    rows = []
    for edge, per in sorted(contributions.items()):
        for vehicle, theta in sorted(per.items()):
            address = account(vehicle)
            role = "vehicle (attacker)" if address in attackers else "vehicle"
            rows.append({"payee": address, "role": f"{role} at edge {edge}", "contribution": f"θ = {theta / SCALE:.4f}",
                         "wei": credited.get((edge, vehicle), 0)})  # fmt: skip
    for c in comparisons:
        if c.section == "block reward" and (m := _EDGE.match(c.subject)):
            led = leaders.count(int(m[1]))
            rows.append({"payee": c.subject, "role": "edge: block rewards", "contribution": f"leader of {led} rounds", "wei": c.on_chain})
        elif c.section == "publisher":
            rows.append({"payee": c.subject, "role": "publisher", "contribution": "escrow not paid out", "wei": c.on_chain})
    return rows


def write_report(folder: Path, view: dict[str, Any], payouts: list[dict[str, Any]], audit_ok: bool, setting: str) -> Path:
    """``report.md`` + ``accuracy.png`` in ``folder``; returns the Markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    fig = task_figure(view, f"task {view['task_id']}: {setting}")
    fig.savefig(folder / "accuracy.png", dpi=120)
    plt.close(fig)
    lines = [
        f"# BMFL demo: task {view['task_id']}", "", setting, "",
        f"Status **{view['status']}** after {view['rounds_finished']} rounds; "
        f"audit from chain data: **{'passed' if audit_ok else 'FAILED'}**.", "",
        "![accuracy](accuracy.png)", "", "## Rounds", "",
        "| round | accuracy | leader edge | flagged vehicles |", "|---|---|---|---|",
    ]  # fmt: skip
    for r, (acc, leader) in enumerate(zip(view["accuracy"], view["leaders"]), start=1):
        lines.append(f"| {r} | {acc:.4f} | {'none' if leader is None else leader} | {', '.join(_flagged(view, r)) or 'none'} |")
    lines += ["", "## Payouts (credited on chain)", "", "| payee | role | contribution | wei | ETH |", "|---|---|---|---|---|"]
    for p in payouts:
        lines.append(f"| {p['payee']} | {p['role']} | {p['contribution']} | {p['wei']} | {p['wei'] / WEI_PER_ETH:.6f} |")
    eps = view.get("epsilon_max")
    lines += ["", f"Largest ε spent by a vehicle: {eps:.2f}" if eps is not None else "No DP accounting reported.", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
