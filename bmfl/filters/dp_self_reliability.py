"""Self-reliability that knows the DP noise (issue 17's "make the DP noise of honest
vehicles part of the model"; docs/algorithms.md §2.1).

BMFL's distance D_m = ‖w̃_m − w^{r-1}‖² (Eq. 12) counts the DP noise an honest vehicle
must add: d·v_m in expectation, with v_m the noise's per-coordinate variance
(``bmfl.filters.dp_floor.noise_variance``). That noise grows as the vehicle's expected
batch shrinks, so the paper's rule rates the smallest honest vehicles least reliable and
a vehicle that skips DP most reliable. Here D_m counts only what the noise cannot
explain:

    D_m = max(0, ‖Δ_m‖² − N_m) (over ‖w^{r-1}‖² with ``normalize="reference"``),
    N_m = d·v_m·(1 + z√(2/d)) + 2z·S_m·√v_m,

the DP envelope's upper norm bound without its signal term S_m² (``dp_envelope``: the
noise's χ²_d upper tail and its cross term with a signal of norm at most S_m, each
exceeded with probability about 3·10⁻⁵ at z = 4). An honest upload then has
D_m ≤ S_m² whatever its noise, while an upload the noise cannot explain keeps its whole
excess. Without DP (v_m = 0) this is the paper's filter. It does not test whether the
noise is there: an upload without noise gains nothing it could not get honestly (its D
is its signal), and ``dp_envelope`` before it flags such uploads.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from bmfl.filters.base import register_filter
from bmfl.filters.dp_envelope import DPEnvelope
from bmfl.filters.self_reliability import Evaluator, SelfReliabilityFilter
from bmfl.task import TrainingSpec


@register_filter("dp_self_reliability")
class DPSelfReliabilityFilter(SelfReliabilityFilter):
    """:class:`SelfReliabilityFilter` with D_m less the noise allowance N_m; ``training``
    the task's calibrated training, ``count_noise`` the std of the declared sizes' DP
    noise (sizes are bounded over n̂ ± z·σ_c as in ``dp_envelope``), ``z`` the bounds'
    width in standard deviations."""

    needs = frozenset({"evaluate", "training", "count_noise"})

    def __init__(
        self, evaluate: Evaluator, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0, z: float = 4.0,
        **options: Any,
    ) -> None:  # fmt: skip
        super().__init__(evaluate, **options)
        self._envelope = DPEnvelope(training, count_noise, z)

    def allowance(self, sizes: torch.Tensor, d: int) -> torch.Tensor:
        """N_m for each declared size (float64, (K,))."""
        _, v, s = self._envelope.bounds(sizes)
        z = self._envelope.z
        return d * v * (1 + z * math.sqrt(2 / d)) + 2 * z * s * v.sqrt()

    def distances(self, updates: torch.Tensor, sizes: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
        if sizes is None:
            raise ValueError("dp_self_reliability needs the uploads' data sizes")
        ref = reference.to(torch.float64)
        raw = (updates.to(torch.float64) - ref).pow(2).sum(dim=1)
        excess = (raw - self.allowance(sizes, updates.shape[1])).clamp_min(0)
        return excess / ref.pow(2).sum().clamp_min(1e-12) if self.normalize == "reference" else excess
