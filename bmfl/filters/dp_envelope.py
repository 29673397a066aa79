"""The DP-SGD envelope: flag uploads that cannot be an honest DP-SGD update, from the
Gram matrix of the updates (issue 17, attackers who hide inside the DP noise).

With DP-SGD (BMFL Algorithm 1, Eq. 9; docs/algorithms.md §1) an honest update is

    Δ_m = w̃_m − w^{r-1} = s_m + n_m,

where n_m ~ N(0, v_m I) is the sum of the vehicle's noise draws (v_m as in ``dp_floor``:
v = η²(σC/B)² Σ_s c_s², c_s = (1 − β^{T−s+1})/(1 − β)) and s_m is a weighted sum of T
batch means of per-sample gradients each clipped to C, so ‖s_m‖ ≤ S_m = η·C·κ·Σ_s c_s.
κ = 1 + z·√((1 − q)/B) covers the Poisson batch being larger than its expectation B
(q = B/n). The edge knows η, σ, C, B, β and T from the task and n_m from the upload's
declared data size, so it knows what any honest Δ_m can look like, without trusting any
other upload. Where declared sizes are DP counts (the services: each vehicle registers
n + N(0, σ_c²), ``bmfl.privacy.COUNT_NOISE``), T and B are only known up to the n the
count allows, so every bound below is taken over n̂ ± z·σ_c (``count_noise``, supplied by
the round core; 0 where sizes are exact): the lower norm bound at the least v_m, the
others at the largest v_m and S_m.

1. **Norm** (the diagonal of G = Δ Δᵀ): ‖n_m‖²/v_m ~ χ²_d, so, with probability about
   1 − 6·10⁻⁵ each at z = 4,
   d·v_m(1 − z√(2/d)) ≤ G_mm ≤ d·v_m(1 + z√(2/d)) + S_m² + 2z·S_m·√v_m.
   The lower half is ``dp_floor``; the upper half flags updates that carry more than
   the noise plus the largest clipped signal (ALIE's μ − z·σ with z > 1, sign flip).
2. **Pairs** (the off-diagonal): honest vehicles draw their noise independently, so
   G_ij = ⟨s_i, s_j⟩ + ⟨s_i, n_j⟩ + ⟨n_i, s_j⟩ + ⟨n_i, n_j⟩ and
   |G_ij| ≤ ŝ_i ŝ_j + z(ŝ_i√v_j + ŝ_j√v_i) + z·√(d·v_i·v_j),
   where ŝ_m = min(S_m, z√v_m + √(z²v_m + max(0, G_mm − d·v_m(1 − z√(2/d))))) bounds
   ‖s_m‖ from the upload's own norm (an honest update with a small signal cannot have
   a large inner product with anything). An upload built from other uploads' noise
   (ALIE's μ − zσ, IPM's −εμ, min-max's μ + γ∇p, the clip-aware reversed mean, copies
   sent by colluders) has an inner product of order d·v/K with them, far outside this
   bound; under DP the honest ones are nearly orthogonal.

3. **Shape** (each upload's coordinates): the noise in every coordinate is N(0, v_m)
   and independent of the signal, and adding anything independent to a centred normal
   can only move its mass away from 0 (Anderson's inequality), so each |Δ_mi| is
   stochastically at least |N(0, v_m)|. The empirical CDF of |Δ_m| therefore lies below
   the half-normal's F_v(t) = 2Φ(t/√v) − 1 up to sampling error: by the one-sided
   Dvoretzky–Kiefer–Wolfowitz inequality (Massart's constant),
   max_t F̂_m(t) − F_v(t) ≤ √(ln(1/α)/(2d)) with probability at least 1 − α, where
   α = P(N(0, 1) > z) is the other tests' one-sided failure probability (3·10⁻⁵ at
   z = 4), checked at ``SHAPE_QUANTILES`` thresholds t (the noise's quantiles at the
   least v_m). This is what a norm cannot see: an update without fresh noise (a signal
   scaled to an honest norm, the constrain-and-scale backdoor) has the energy of the
   noise but not its shape, since a gradient's coordinates are far from Gaussian (most
   are small). The test reads the coordinates' distribution, not where they point: a
   signal whose magnitudes are remapped onto the half-normal's quantiles (signs and
   ranks kept) passes it without noise, keeping what of its direction survives that
   remapping.

Uploads failing (1) or (3) are flagged. Among the rest, two that fail (2) cannot both be
honest; the filter keeps a largest set of uploads with no failing pair (a maximum
independent set of the conflict graph: exact by enumeration for up to ``exact_max``
uploads, greedy removal of the most-conflicting upload above that) and flags the others.
Ties between equally large sets go to the one first in upload (vehicle) order. An
attacker that passes sends something shaped like fresh noise of the right variance plus
a "signal" no larger than an honest vehicle's largest clipped signal S_m
(``envelope_aware`` and ``envelope_backdoor`` send exactly that), short of the remapping
above.

``info`` holds the Gram matrix, the bounds, the norm ratio G_mm/(d·v_m) (1 for pure
noise), the shape excess max_t F̂_m(t) − F_v(t) with its bound, and the conflict graph;
no reliability score is recorded (the test is two-sided and pairwise, not a score to
reach). The cost is one K×K Gram matrix, O(K²d) time, built over blocks of coordinates
so that its memory is ``GRAM_BUDGET`` bytes beyond the uploads whatever K and d are
(:func:`bmfl.filters.gram.gram_matrix`, shared with the filters after it), and one pass
over each upload for its shape.
Without DP (v = 0) no upload is flagged.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.filters.dp_floor import momentum_sums, noise_config, size_range, variance_range
from bmfl.filters.gram import gram_matrix
from bmfl.task import TrainingSpec
from bmfl.training.local import LocalTrainingConfig, expected_batch, round_plan


SHAPE_QUANTILES = 32
"""The shape test compares the CDFs at the noise's j/32-quantiles, j = 1…31."""


def shape_excess(updates: torch.Tensor, reference: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """(K,) max_j F̂_m(t_mj) − p_j: how far more of upload m's coordinates lie within
    t_mj of w^{r-1} than N(0, v_m) noise puts there, at the thresholds t_mj with
    P(|N(0, v_m)| ≤ t_mj) = p_j = j/``SHAPE_QUANTILES`` (≤ 0 for pure noise, up to
    sampling error; one upload in float64 at a time)."""
    p = torch.arange(1, SHAPE_QUANTILES, dtype=torch.float64, device=updates.device) / SHAPE_QUANTILES
    quantiles = math.sqrt(2) * torch.erfinv(p)  # of |N(0, 1)|
    ref = reference.to(torch.float64)
    excess = []
    for row, v in zip(updates, variance.tolist()):
        scaled = (row.to(torch.float64) - ref).abs_() / math.sqrt(v)
        below = torch.bucketize(scaled, quantiles, right=False).bincount(minlength=len(p) + 1).cumsum(0)[:-1]
        excess.append(float((below.to(torch.float64) / row.numel() - p).max()))
    return torch.tensor(excess, dtype=torch.float64)


def signal_bound(config: LocalTrainingConfig, num_samples: int, z: float) -> float:
    """S: the largest norm the clipped-gradient part of an honest update can have,
    η·C·κ·Σ_s c_s with the Poisson batch slack κ = 1 + z√((1 − q)/B)."""
    plan = round_plan(config, num_samples)
    batch = expected_batch(config, num_samples)
    slack = 1 + z * math.sqrt(max(0.0, 1 - plan.sampling_rate) / batch)
    return config.lr * config.clip * slack * momentum_sums(plan.steps, config.momentum)[0]


def maximum_independent_set(conflicts: list[set[int]], exact_max: int) -> list[int]:
    """A largest set of vertices with no edge between them (``conflicts[i]``: the
    neighbours of i), ties to the first in vertex order; exact up to ``exact_max``
    vertices, greedy (drop the vertex with most conflicts, the last on ties) above."""
    k = len(conflicts)
    if k <= exact_max:
        for size in range(k, 0, -1):
            for subset in itertools.combinations(range(k), size):
                chosen = set(subset)
                if all(not (conflicts[i] & chosen) for i in subset):
                    return list(subset)
        return []
    alive = set(range(k))
    while True:
        degree = {i: len(conflicts[i] & alive) for i in alive}
        worst = max(alive, key=lambda i: (degree[i], i))
        if degree[worst] == 0:
            return sorted(alive)
        alive.remove(worst)


@register_filter("dp_envelope")
class DPEnvelope(UpdateFilter):
    needs = frozenset({"training", "count_noise"})

    def __init__(
        self, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0, z: float = 4.0, exact_max: int = 12,
    ) -> None:  # fmt: skip
        if z <= 0:
            raise ValueError("z must be positive")
        if exact_max < 0:
            raise ValueError("exact_max must be non-negative")
        if count_noise < 0:
            raise ValueError("count_noise must be non-negative")
        self.z = z
        self.count_noise = count_noise
        self.exact_max = exact_max
        self._config = noise_config(training, self.name)

    def bounds(self, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K,) least and largest noise variances v_m and largest signal bounds S_m over
        the data sizes each declared size allows (``bmfl.filters.dp_floor.size_range``;
        one size, so v_low = v_high, when the sizes are exact). S_m grows with n at fixed
        steps and batch (its Poisson slack does), so it is computed once per such pair, at
        the largest n of the pair."""
        config, low, high, signal = self._config, [], [], []
        for declared in (max(1, int(n)) for n in sizes.tolist()):
            v_low, v_high = variance_range(config, declared, self.count_noise, self.z)
            low.append(v_low)
            high.append(v_high)
            largest = {(round_plan(config, n).steps, expected_batch(config, n)): n
                       for n in size_range(declared, self.count_noise, self.z)}
            signal.append(max(signal_bound(config, n, self.z) for n in largest.values()))
        return tuple(torch.tensor(x, dtype=torch.float64) for x in (low, high, signal))  # type: ignore[return-value]

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        if sizes is None:
            raise ValueError("dp_envelope needs the uploads' data sizes")
        k, d = updates.shape
        z = self.z
        gram = gram_matrix(updates, reference)
        v_low, v, s = self.bounds(sizes)
        diag = gram.diagonal()
        if not bool((v_low > 0).all()):
            ones = torch.ones(k, dtype=torch.bool)
            return FilterResult(ones, {"gram": gram})
        low = d * v_low * (1 - z * math.sqrt(2 / d))
        high = d * v * (1 + z * math.sqrt(2 / d)) + s**2 + 2 * z * s * v.sqrt()
        shape = shape_excess(updates, reference, v_low)
        shape_bound = math.sqrt(-math.log(0.5 * math.erfc(z / math.sqrt(2))) / (2 * d))
        norm_ok = (diag >= low) & (diag <= high)
        alone_ok = norm_ok & (shape <= shape_bound)
        shat = torch.minimum(s, z * v.sqrt() + (z * z * v + (diag - low).clamp_min(0)).sqrt())
        sd = v.sqrt()
        pair_bound = (shat[:, None] * shat[None, :] + z * (shat[:, None] * sd[None, :] + sd[:, None] * shat[None, :])
                      + z * torch.sqrt(d * v[:, None] * v[None, :]))
        conflict = (gram.abs() > pair_bound) & alone_ok[:, None] & alone_ok[None, :]
        conflict.fill_diagonal_(False)
        candidates = torch.nonzero(alone_ok).flatten().tolist()
        graph = [{candidates.index(j) for j in torch.nonzero(conflict[i]).flatten().tolist()} for i in candidates]
        kept = [candidates[i] for i in maximum_independent_set(graph, self.exact_max)]
        keep = torch.zeros(k, dtype=torch.bool)
        keep[kept] = True
        info = {"gram": gram, "noise_variance": v, "signal_bound": s, "norm_ratio": diag / (d * v),
                "shape_excess": shape, "shape_bound": shape_bound, "norm_ok": norm_ok, "conflict": conflict,
                "pair_bound": pair_bound}
        return FilterResult(keep, info)
