"""The signal median: flag uploads whose DP-SGD signal lies far from the edge's robust
centre, with the DP noise taken out of every distance (issue 17; docs/algorithms.md §8.4).

Under DP-SGD an honest update is Δ_m = s_m + n_m with n_m ~ N(0, v_m I) independent
across vehicles (``dp_envelope``). Raw distances between uploads are dominated by the
noise (d·v_m ≈ 28 against signal energies ≈ 1 in the `private` preset), which is why
distance-based rules see nothing under DP. But the noise's contribution is known: from
the Gram matrix G = Δ Δᵀ,

    H = G − diag(d·v_m),   E[H] = S Sᵀ  (S the signals),

since E⟨n_i, n_j⟩ = 0 for i ≠ j and E‖n_m‖² = d·v_m. H_mm estimates ‖s_m‖² with
standard deviation about √(2d)·v_m (≈ 0.2 there), so distances between *signals*,
D_ij = H_ii + H_jj − 2H_ij, are measured far more precisely than the uploads' own norms
suggest. The filter computes the geometric median of the signals, z = Σ_i α_i s_i, by
Weiszfeld's iteration on the coefficients α (only H is needed: ‖s_m − z‖² =
H_mm − 2(Hα)_m + αᵀHα), and flags upload m when

    ‖s_m − z‖² > c²·median_i ‖s_i − z‖² + a_m,

c = ``factor`` (3), a_m = z·√(2d)·v_m the error of the noise correction (z = 4). With
``centre="majority_mean"`` z is then moved to the mean of the majority of signals
nearest it (:func:`majority_mean`): the geometric median of five uploads, two of them
colluders sending the same push, lies between the honest signals and theirs, which
inflates the honest distances and with them the threshold (docs/algorithms.md §8.4).
The filter's own default stays the geometric median, so the recorded matrices
reproduce; every preset and a new task's default name the majority mean. Where
sizes are noisy DP counts (the services), v_m is only known to lie in [v_low, v_high]
over the sizes the count allows; there it is read from the upload's own coordinates,
v̂_m = median_i Δ_mi² / median(χ²₁), clamped to that range, and a_m gains the estimate's
own error z·2.33·√d·v̂_m (the sample median's standard error). The geometric median has a breakdown point of
one half, so while the honest signals are a majority it stays among them, and an
attacker's signal may lie no farther from it than c times the typical honest one. An
attacker inside the DP envelope who pushes by S, the largest clipped signal
(``envelope_aware``: energy ≈ 13 against honest 0.3–2), is flagged; one that passes
(``median_aware``) must keep its push within c median distances of the honest centre
(and, with ``clip``, is then clipped to one).

With ``clip`` (the filter's default; the default task pipeline only flags, §8.4) the
uploads it keeps are then clipped around the centre (centred clipping, Karimireddy et
al. 2021, with the geometric median as the centre and the distances measured on the
signals): with r_m = ‖s_m − z‖ and ρ the median r over the kept uploads,

    Δ_m' = z_Δ + min(1, ρ/r_m)·(Δ_m − z_Δ),   z_Δ = Σ_i α_i Δ_i,

so no kept upload moves the aggregate farther from the centre than a typical one does
(its noise shrinks with it, which costs no vehicle privacy). ρ is 0 when every signal
sits at the centre within the correction's error; then every kept upload becomes z_Δ,
an average of the uploads.

Without DP (v = 0) there is no noise to take out and the test has nothing to rest on:
raw distances between honest non-private updates of complete non-IID vehicles differ
by more than 3× (measured: 21 of 50 honest vehicles flagged a round on one seed), so
the filter keeps every upload unchanged, as ``dp_envelope`` does. With fewer than 3
uploads nothing is flagged or clipped. ``info`` holds H, the coefficients α, the
distances, the threshold, the correction error a_m and, with ``clip``, ρ and the shrink
factors. Cost: one K×K Gram matrix (``gram_matrix``, bounded memory; the DP envelope's,
when it runs first, is reused) and O(K²) per Weiszfeld step.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.filters.dp_floor import noise_config, variance_range
from bmfl.filters.gram import gram_matrix
from bmfl.task import TrainingSpec


CENTRES = ("geometric_median", "majority_mean")
"""Where the filter measures distances from: the signals' geometric median, or the mean
of the majority nearest it (:func:`majority_mean`)."""
MEDIAN_CHI2 = 0.454936423119572
"""The median of χ²₁: median(x²) = 0.4549·v for x ~ N(0, v)."""
MEDIAN_SE = 2.3328
"""The relative standard error of v̂ = median(x²)/0.4549 from d coordinates, times √d:
1/(2 f(m) m) with f the χ²₁ density at its median m."""


def noise_estimate(updates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(K,) v̂_m = median_i (Δ_mi)² / median(χ²₁): each upload's noise variance read from its
    own coordinates. A signal concentrated on few coordinates barely moves it; one spread
    over all of them is partly counted as noise, which only hides signal energy (the
    estimate is kept within what the declared count allows)."""
    ref = reference.to(torch.float64)  # one upload in float64 at a time: memory O(d), not O(Kd)
    return torch.stack([(row.to(torch.float64) - ref).square_().median() for row in updates]) / MEDIAN_CHI2


def geometric_median_weights(h: torch.Tensor, floor: float, iterations: int = 200, tol: float = 1e-10) -> torch.Tensor:
    """(K,) α with z = Σ α_i s_i the geometric median of vectors with Gram matrix ``h``
    (Weiszfeld: α ∝ 1/max(‖s_i − z‖, ``floor``), from the mean)."""
    k = h.shape[0]
    alpha = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(iterations):
        weights = 1.0 / distances_to(h, alpha).sqrt().clamp_min(floor)
        new = weights / weights.sum()
        done = float((new - alpha).abs().max()) < tol
        alpha = new
        if done:
            break
    return alpha


def majority_mean(
    h: torch.Tensor, dist: torch.Tensor, allowance: torch.Tensor, iterations: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(α, distances) of the mean of the ⌊K/2⌋ + 1 signals nearest the centre that
    ``dist`` measures from, chosen again from the new distances until that majority no
    longer changes (concentration steps, as in the minimum covariance determinant; at
    most ``iterations``). Signals are ranked by distance plus their correction error
    ``allowance``, so an upload whose signal estimate is mostly noise (a small vehicle's:
    its corrected energy may read −7 or +19) does not define the centre by seeming to
    sit on it."""
    k = h.shape[0]

    def nearest(d: torch.Tensor) -> list[int]:
        return sorted((d + allowance).argsort()[: k // 2 + 1].tolist())

    members = nearest(dist)
    for _ in range(iterations):
        alpha = torch.zeros(k, dtype=torch.float64)
        alpha[members] = 1.0 / len(members)
        dist = distances_to(h, alpha)
        if nearest(dist) == members:
            break
        members = nearest(dist)
    return alpha, dist


def distances_to(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(K,) ‖s_m − Σ_i α_i s_i‖² from the Gram matrix ``h`` (clamped at 0: a noise-corrected
    H need not be positive semi-definite)."""
    ha = h @ alpha
    return (h.diagonal() - 2 * ha + alpha @ ha).clamp_min(0.0)


@register_filter("signal_median")
class SignalMedian(UpdateFilter):
    needs = frozenset({"training", "count_noise"})

    def __init__(
        self, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0, factor: float = 3.0, z: float = 4.0,
        clip: bool = True, centre: str = "geometric_median",
    ) -> None:  # fmt: skip
        if factor <= 1 or z <= 0 or count_noise < 0:
            raise ValueError("need factor > 1, z > 0 and count_noise >= 0")
        if centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES}")
        self.centre = centre
        self.factor = factor
        self.clip = clip
        self.z = z
        self.count_noise = count_noise
        self._config = noise_config(training, self.name)

    def corrected_gram(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, a): the Gram matrix of the uploads' deltas less each upload's noise energy
        d·v_m, and the error allowance a_m of that correction. With exact sizes v_m is the
        task's; where a noisy declared count allows a range [v_low, v_high], v_m is read
        from the upload itself (:func:`noise_estimate`) within that range."""
        d = updates.shape[1]
        ranges = [variance_range(self._config, max(1, int(n)), self.count_noise, self.z) for n in sizes.tolist()]
        low, high = (torch.tensor(x, dtype=torch.float64) for x in zip(*ranges))
        h = gram_matrix(updates, reference)
        exact = bool((low == high).all())
        v = low if exact else torch.minimum(torch.maximum(noise_estimate(updates, reference), low), high)
        h.diagonal().sub_(d * v)
        return h, self._allowance(d, v, estimated=not exact)

    def _allowance(self, d: int, v: torch.Tensor, estimated: bool) -> torch.Tensor:
        """a_m = z·(√(2d) + [2.33·√d where v_m was read from the upload])·v_m."""
        return self.z * (math.sqrt(2 * d) + (MEDIAN_SE * math.sqrt(d) if estimated else 0.0)) * v

    def _verdicts(self, h: torch.Tensor, allowance: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(keep, α, ‖s_m − z‖², threshold) from the corrected Gram matrix."""
        alpha = geometric_median_weights(h, math.sqrt(float(allowance.mean())) or 1e-12)
        dist = distances_to(h, alpha)
        if self.centre == "majority_mean":
            alpha, dist = majority_mean(h, dist, allowance)
        threshold = self.factor**2 * float(dist.median()) + allowance
        return dist <= threshold, alpha, dist, threshold

    def keeps(self, updates: torch.Tensor, reference: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """(K,) which uploads the filter keeps when each one's noise variance v_m is given
        (an attacker's model of it, ``median_aware``), with exact sizes' allowance."""
        d = updates.shape[1]
        h = gram_matrix(updates, reference)
        h.diagonal().sub_(d * variance)
        return self._verdicts(h, self._allowance(d, variance, estimated=False))[0]

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        if sizes is None:
            raise ValueError("signal_median needs the uploads' data sizes")
        k = updates.shape[0]
        h, allowance = self.corrected_gram(updates, sizes, reference)
        if k < 3 or not bool((allowance > 0).all()):  # without DP noise there is no signal to separate
            return FilterResult(torch.ones(k, dtype=torch.bool), {"corrected_gram": h})
        keep, alpha, dist, threshold = self._verdicts(h, allowance)
        info = {"corrected_gram": h, "alpha": alpha, "distance": dist, "threshold": threshold, "allowance": allowance}
        if not self.clip:
            return FilterResult(keep, info)
        radius = float(dist[keep].median().sqrt())
        shrink = (radius / dist.sqrt().clamp_min(1e-30)).clamp(max=1.0)
        deltas = updates.to(torch.float64) - reference.to(torch.float64)
        centre = alpha @ deltas
        clipped = reference.to(torch.float64) + centre + shrink[:, None] * (deltas - centre)
        info |= {"radius": radius, "shrink": shrink}
        return FilterResult(keep, info, updates=clipped.to(updates.dtype))
