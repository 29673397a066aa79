"""ε actually spent by DP-SGD (BMFL Algorithm 1), from a real accountant.

The BMFL paper bounds each step by σ ≥ sqrt(2 ln(1.25/δ))/ε (§III-C, Eq. 10), which
holds only for ε < 1 and, summed over thousands of steps, gives a meaningless ε (≈ 11,356
for 4,688 steps). Instead each step is the Poisson-subsampled Gaussian mechanism
(rate q, noise multiplier σ) and steps compose under RDP (Mironov 2017) or a privacy-loss
distribution (PLD), both from Google's ``dp-accounting``.

Known answers (q = 64/1200, σ = 2, δ = 1e-5): 4,688 steps → ε = 10.50 (RDP), 9.76 (PLD).
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import dp_accounting

# ``dp_accounting`` is imported where ε is computed, not here: its package imports SciPy's
# statistics and signal processing (about 1.5 s), which the services and CLI commands that
# import this module only to type or hold an accountant never use.
# dp-accounting logs a warning for every fractional RDP order it cannot evaluate at large
# sampling rates; those orders are simply left out of the minimum, so the bound stays valid.
logging.getLogger("absl").setLevel(logging.ERROR)

ACCOUNTANTS = ("rdp", "pld")


class PrivacyAccountant:
    """Tracks the steps one vehicle has taken and reports ε at its δ.

    Steps may come with different sampling rates (the vehicle's data size can change
    between tasks) or noise multipliers; all are composed.
    """

    def __init__(self, delta: float, method: str = "rdp") -> None:
        if method not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {method!r}; one of {ACCOUNTANTS}")
        if not 0.0 < delta < 1.0:
            raise ValueError("delta must be in (0, 1)")
        self.delta = delta
        self.method = method
        self._steps: Counter[tuple[float, float]] = Counter()

    @property
    def steps(self) -> int:
        return sum(self._steps.values())

    def step(self, sampling_rate: float, noise_multiplier: float, count: int = 1) -> None:
        """Record ``count`` steps of the subsampled Gaussian mechanism."""
        if not 0.0 < sampling_rate <= 1.0:
            raise ValueError("sampling_rate must be in (0, 1]")
        if noise_multiplier <= 0.0:
            raise ValueError("noise_multiplier must be > 0 for a private step")
        self._steps[(sampling_rate, noise_multiplier)] += count

    def epsilon(self) -> float:
        """ε at ``delta`` after every recorded step (0 when none)."""
        if not self._steps:
            return 0.0
        from dp_accounting import pld, rdp

        if self.method == "rdp":
            # RDP composes additively: Σ count · (one step's RDP curve), then convert.
            curve = sum(count * _one_step_rdp(q, sigma) for (q, sigma), count in self._steps.items())
            return float(rdp.rdp_privacy_accountant.compute_epsilon(_rdp_orders(), curve, self.delta)[0])
        accountant = pld.PLDAccountant()
        for (q, sigma), count in self._steps.items():
            accountant.compose(_event(q, sigma), count)
        return float(accountant.get_epsilon(self.delta))


@lru_cache(maxsize=1)
def _rdp_orders() -> tuple[float, ...]:
    """dp-accounting's default RDP orders."""
    from dp_accounting import rdp

    return tuple(rdp.RdpAccountant()._orders)


def _event(q: float, sigma: float) -> dp_accounting.DpEvent:
    import dp_accounting

    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))


@lru_cache(maxsize=4096)
def _one_step_rdp(q: float, sigma: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at every order in :func:`_rdp_orders`."""
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant(list(_rdp_orders()))
    accountant.compose(_event(q, sigma))
    return np.asarray(accountant._rdp, dtype=np.float64)
