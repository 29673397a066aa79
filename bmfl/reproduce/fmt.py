"""Number formatting shared by the report's sections."""

from __future__ import annotations


def pct(x: float | None) -> str:
    """``0.1234`` → ``12.3 %``; None → ``—``."""
    return "—" if x is None else f"{100 * x:.1f} %"


def num(x: float | None) -> str:
    """Four decimals, scientific beyond 1,000; NaN or ±inf → ``diverged``."""
    if x is None:
        return "—"
    if x != x or x in (float("inf"), float("-inf")):
        return "diverged"
    return f"{x:.4f}" if abs(x) < 1e3 else f"{x:.2e}"
