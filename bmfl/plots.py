"""What every BMFL plot shares, so that each reads at a glance: whole-number round ticks,
an accuracy axis fixed at 0–1, a title naming the setting (attack, defence, DP), the
legend outside the data, a min–max band where seeds vary, and line styles that keep a
curve visible when it lies on another."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.ticker import MaxNLocator  # noqa: E402

STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "x", "+")


def styles() -> itertools.cycle:
    """Line style and marker pairs to pass as ``**style``: overlapping curves stay apart."""
    return itertools.cycle({"linestyle": s, "marker": m, "markersize": 4} for s, m in zip(STYLES * 2, MARKERS))


def round_axis(ax: Any) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def accuracy_axis(ax: Any, label: str = "test accuracy") -> None:
    ax.set_ylim(0, 1)
    ax.set_ylabel(label)


def legend_outside(ax: Any, **kw: Any) -> None:
    """The legend to the right of the axes, never over a curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=kw.pop("fontsize", 8), **kw)


def setting(attack: str | None, fraction: float, defence: str, dp: str | None) -> str:
    """``attack: sign_flip 20 % · defence: self_reliability+reweight / fedavg · DP σ = 2, C = 1``."""
    attacked = f"{attack} {fraction:.0%}" if attack and fraction > 0 else "none"
    return f"attack: {attacked} · defence: {defence} · " + (f"DP {dp}" if dp else "no DP")


def dp_setting(training: Any) -> str | None:
    """``σ = 2, C = 1`` of a :class:`bmfl.task.TrainingSpec` with DP, else ``None``."""
    return f"σ = {training.noise_multiplier:g}, C = {training.clip:g}" if training.dp else None


def band(ax: Any, rounds: Sequence[int], runs: Sequence[Sequence[float]], label: str, **style: Any) -> None:
    """The mean over ``runs`` (one list per seed), with a min–max band when there are several."""
    n = min(len(r) for r in runs)
    per_round = [[r[i] for r in runs] for i in range(n)]
    line = ax.plot(rounds[:n], [statistics.fmean(v) for v in per_round], label=label, **style)[0]
    if len(runs) > 1:
        ax.fill_between(rounds[:n], [min(v) for v in per_round], [max(v) for v in per_round], color=line.get_color(), alpha=0.2)
