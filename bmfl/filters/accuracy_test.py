"""A scale-free replacement for the self-reliability threshold (BMFL Eq. 11–13).

Eq. 11 adds a test accuracy α ∈ [0, 1] to an unbounded squared distance, so its
threshold depends on d, η, the local steps and the DP noise, and an attacker who skips
DP (smaller D) looks *more* reliable than an honest vehicle. This filter keeps only the
accuracy half, as a statistical test that needs no tuning per task: upload m is
unreliable when its accuracy on the publisher's test set is significantly below that
of the model it started from,

    α_m < α_ref − max(``min_drop``, z · √(2·α_ref·(1 − α_ref)/n)),

n the test-set size (``test_size``; the normal approximation of the difference of two
binomial proportions on n images), z = 3 by default: with a 300-image set the margin
is wide, with the full set narrow, so a small test set does not flag honest vehicles
by chance. Distance plays no part, so DP noise neither helps nor hurts an upload; pair
it with ``norm_clip``, which bounds what a passing upload can do. Like Eq. 11 it never
looks at other uploads, so it holds with a majority of attackers. The recorded score is
Λ_m = z·(α_m − α_ref)/margin, with threshold −z (kept iff Λ_m ≥ −z).

Measured limit (``docs/robustness_pilot/``): under Dirichlet(0.9) with DP-SGD an honest
local model is often significantly *worse* on the global test set than w^{r-1} (it
fits its own label skew), and this test flagged 40 % of honest uploads in clean runs.
It is a building block, not a default.
"""

from __future__ import annotations

import math

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.filters.self_reliability import Evaluator


def accuracy_margin(alpha_ref: float, test_size: int | None, z: float, min_drop: float) -> float:
    """The accuracy an upload may lose against w^{r-1} before it is flagged."""
    if test_size is None:
        return min_drop
    se = math.sqrt(2 * alpha_ref * (1 - alpha_ref) / test_size)
    return max(min_drop, z * se)


@register_filter("accuracy_test")
class AccuracyTest(UpdateFilter):
    needs = frozenset({"evaluate"})

    def __init__(self, evaluate: Evaluator, test_size: int | None = None, z: float = 3.0, min_drop: float = 0.02) -> None:
        if z <= 0 or min_drop < 0 or (test_size is not None and test_size < 1):
            raise ValueError("need z > 0, min_drop >= 0 and test_size >= 1")
        self.evaluate = evaluate
        self.test_size = test_size
        self.z = z
        self.min_drop = min_drop

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        acc = torch.as_tensor(self.evaluate(torch.cat([reference[None, :], updates])), dtype=torch.float64)
        alpha_ref, alpha = float(acc[0]), acc[1:]
        margin = accuracy_margin(alpha_ref, self.test_size, self.z, self.min_drop)
        keep = alpha >= alpha_ref - margin
        score = (alpha - alpha_ref) / margin * self.z
        info = {"alpha": alpha, "alpha_reference": alpha_ref, "margin": margin}
        return FilterResult(keep, info, reliability=score, threshold=-self.z)
