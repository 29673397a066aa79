"""A floor on each update's component along the edge's root update: no upload may push
the model against the descent direction of the publisher's root data by more than the
DP noise explains (issue 17; the direction test of FLTrust, Cao et al., NDSS 2021,
Eq. 2, made noise-aware).

Under DP-SGD the consensus signal of a round is small next to each upload's noise (on
MNIST-5k with σ = 2 the honest mean signal has norm ≈ 0.1, each upload's noise ≈ 3.5), so
an attacker whose update passes ``dp_envelope`` (fresh noise plus a clipped-size signal
against the descent direction, ``envelope_aware``) still outweighs it. The root update
g_0 (the edge's own update from w^{r-1} on the root data without DP, as FLTrust's,
``bmfl.rounds.root_updater``) is a noise-free estimate of the descent direction. With
u = g_0/‖g_0‖ and Δ_m = w̃_m − w^{r-1}, an honest projection ⟨Δ_m, u⟩ = ⟨s_m, u⟩ + N(0, v_m)
(u is independent of the vehicle's noise). The filter keeps every upload and passes on

    Δ_m' = Δ_m + max(0, −t_m − ⟨Δ_m, u⟩)·u,    t_m = z·√v_m,

i.e. it raises a projection below −t_m to −t_m and changes nothing else. An honest
upload is changed only where its own signal points against g_0 (and then only along u);
an attacker's push along −u is cut to t_m, whatever its norm. v_m is the DP noise
variance of ``dp_floor`` (from the task's training settings and the upload's data size).
Without DP (v = 0) the floor is at 0. ``info`` holds the projections and which uploads
were raised. Cost: one root training per edge and round, plus K inner products.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.filters.dp_floor import noise_config, projection_floor
from bmfl.task import TrainingSpec


@register_filter("root_floor")
class RootFloor(UpdateFilter):
    needs = frozenset({"root_update", "training", "count_noise"})

    def __init__(self, root_update: Callable[[torch.Tensor], torch.Tensor],
                 training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0, z: float = 4.0) -> None:
        if z < 0:
            raise ValueError("z must be non-negative")
        if count_noise < 0:
            raise ValueError("count_noise must be non-negative")
        self.root_update = root_update
        self.z = z
        self.count_noise = count_noise
        self._config = noise_config(training, self.name)

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        if sizes is None:
            raise ValueError("root_floor needs the uploads' data sizes")
        ref = reference.to(torch.float64)
        deltas = updates.to(torch.float64) - ref
        root = self.root_update(reference).to(torch.float64) - ref
        keep = torch.ones(len(updates), dtype=torch.bool)
        norm = float(root.norm())
        if norm == 0.0 or not math.isfinite(norm):
            return FilterResult(keep, {"root_norm": norm})
        unit = root / norm
        proj = deltas @ unit
        floor = -projection_floor(self._config, sizes, self.count_noise, self.z)
        lift = (floor - proj).clamp_min(0)
        raised = deltas + lift[:, None] * unit[None, :]
        info = {"root_norm": norm, "projection": proj, "floor": floor, "raised": lift > 0}
        return FilterResult(keep, info, updates=(ref + raised).to(updates.dtype))
