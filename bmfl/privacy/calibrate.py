"""σ for a target ε: the noise multiplier that makes a task's planned DP-SGD steps spend
at most ε at δ, for every vehicle (docs/algorithms.md §1.2).

A plan is (q, steps): a vehicle's sampling rate and its steps over the whole task. ε(σ)
of one plan decreases with σ, so σ is found by bisection (in log σ) on the plan that
spends most; the answer is then checked on every plan (the plan that spends most can
change with σ) and the bisection repeats on a plan that overspends. The result spends
at most the target and, on the plan that spends most, at least (1 − ``rtol``) of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

from bmfl.privacy.accountant import PrivacyAccountant

Plan = tuple[float, int]
"""(sampling rate q, DP-SGD steps over the whole task)."""
RTOL = 0.01
"""A calibrated σ spends at least (1 − RTOL) of the target ε."""
_SIGMA_RANGE = (1e-2, 1e4)


@lru_cache(maxsize=4096)
def _epsilon(sigma: float, q: float, steps: int, delta: float, method: str) -> float:
    accountant = PrivacyAccountant(delta, method)
    accountant.step(q, sigma, steps)
    return accountant.epsilon()


def epsilon_of(sigma: float, plans: Iterable[Plan], delta: float, method: str = "rdp") -> float:
    """The largest ε at δ that any of ``plans`` spends with noise multiplier ``sigma``."""
    return max(_epsilon(sigma, q, steps, delta, method) for q, steps in set(plans))


def _bisect(target: float, spend, rtol: float) -> float:
    """σ with (1 − rtol)·target ≤ spend(σ) ≤ target; ``spend`` decreases in σ. Bracket
    by doubling or halving, then interpolate log ε linearly in log σ (ε ≈ a·σ^−k),
    kept inside the inner 80 % of the bracket so that it always shrinks."""
    lo, hi = 1.0, 1.0
    while spend(hi) > target:
        lo, hi = hi, hi * 2
        if hi > _SIGMA_RANGE[1]:
            raise ValueError(f"target ε = {target:g} needs σ > {_SIGMA_RANGE[1]:g}")
    if lo == hi:
        while spend(lo) <= target:
            hi, lo = lo, lo / 2
            if lo < _SIGMA_RANGE[0]:
                return hi  # ε stays below the target even with almost no noise
    aim = math.log((1 - rtol / 2) * target)
    for _ in range(200):  # ε(σ) is continuous, so the bracket closes on the band
        if spend(hi) >= (1 - rtol) * target:
            break
        a, b = math.log(lo), math.log(hi)
        fa, fb = math.log(spend(lo)), math.log(spend(hi))
        t = min(max((fa - aim) / (fa - fb), 0.1), 0.9) if math.isfinite(fa) else 0.5
        mid = math.exp(a + t * (b - a))
        lo, hi = (lo, mid) if spend(mid) <= target else (mid, hi)
    return hi


def calibrate_sigma(target: float, delta: float, plans: Iterable[Plan], method: str = "rdp", rtol: float = RTOL) -> float:
    """The noise multiplier σ with which no plan spends more than ``target`` ε at
    ``delta`` and the plan that spends most spends at least (1 − ``rtol``)·``target``."""
    if not target > 0:
        raise ValueError("the target ε must be > 0")
    plans = sorted(set(plans))
    if not plans or any(not 0 < q <= 1 or steps < 1 for q, steps in plans):
        raise ValueError("calibration needs plans of q in (0, 1] and at least one step")
    # ε grows with q and with steps: a plan another matches or exceeds in both never spends more
    plans = [p for p in plans if not any(o != p and o[0] >= p[0] and o[1] >= p[1] for o in plans)]
    worst = max(plans, key=lambda p: p[1] * p[0] ** 2)  # small-q RDP: ε ∝ steps·q²/σ²
    while True:
        sigma = _bisect(target, lambda s, plan=worst: _epsilon(s, *plan, delta, method), rtol)
        top = max(plans, key=lambda p: _epsilon(sigma, *p, delta, method))
        if _epsilon(sigma, *top, delta, method) <= target:
            return sigma
        worst = top
