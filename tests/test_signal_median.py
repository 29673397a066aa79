"""signal_median: the geometric median of the uploads' signals with the DP noise taken out
of the distances, and median_aware, the attacker that knows it (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch

from bmfl.attacks import EdgeView, get_attack
from bmfl.filters import get_filter
from bmfl.filters.dp_floor import noise_variance
from bmfl.filters.signal_median import MEDIAN_SE, distances_to, geometric_median_weights, majority_mean, noise_estimate
from bmfl.task import TrainingSpec

# B = 64 for n ≥ 640: v = (η σ C / B)² with one step; S ≈ η C κ
TRAINING = TrainingSpec(epochs=1, max_steps=1, batch_size=64, max_sampling_rate=0.1, lr=0.5, noise_multiplier=1.0,
                        clip=1.0, momentum=0.0)  # fmt: skip
D, N = 20_000, 1000
V = noise_variance(TRAINING.local(), N)


def _fleet(seed: int, attackers: int, push: float, honest: int = 8, spread: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Honest signals 0.5·u plus a ``spread``, attackers push·u, each with fresh N(0, v) noise."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(D)
    u[:100] = 0.1  # a unit direction
    signals = [0.5 * u + spread * torch.randn(D, generator=g) / math.sqrt(D) for _ in range(honest)]
    signals += [push * u for _ in range(attackers)]
    noise = math.sqrt(V) * torch.randn(len(signals), D, generator=g)
    return torch.stack(signals) + noise, u


def test_the_geometric_median_of_known_points() -> None:
    """Points 0, 1 and 10 on a line: the median is 1 (Weiszfeld from the mean)."""
    x = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    alpha = geometric_median_weights(x @ x.T, floor=1e-9, iterations=2000)
    assert float(alpha @ x[:, 0]) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(distances_to(x @ x.T, alpha), torch.tensor([1.0, 0.0, 81.0], dtype=torch.float64), atol=1e-2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_honest_upload_is_flagged_and_the_noise_hides_nothing(seed: int) -> None:
    """Raw distances are all noise (d·v ≈ 1.2 against signals of 0.5); the corrected ones
    are the signals'."""
    updates, _ = _fleet(seed, 0, 0.0)
    result = get_filter("signal_median", training=TRAINING)(updates, torch.full((8,), float(N)), torch.zeros(D))
    assert bool(result.keep.all())
    assert float(result.info["distance"].max()) < 0.5 * D * V  # far below the raw noise energy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_push_by_the_largest_clipped_signal_is_flagged(seed: int) -> None:
    """Two attackers push by −3·u inside the DP envelope (envelope_aware's upload): plain
    averaging would move the model against u; the filter flags both, and clipping the
    others to the median radius leaves the honest direction."""
    updates, u = _fleet(seed, 2, -3.0)
    assert float(updates.mean(0) @ u) < 0  # the attack works on the average
    result = get_filter("signal_median", training=TRAINING)(updates, torch.full((10,), float(N)), torch.zeros(D))
    assert result.keep.tolist() == [True] * 8 + [False] * 2
    kept = result.updates[result.keep]
    assert float(kept.mean(0) @ u) > 0.3


def test_the_attacker_that_knows_the_filter_is_kept_and_pushes_less() -> None:
    """median_aware searches for the longest push the filter admits: all its uploads are
    kept, its push is shorter than envelope_aware's S (which the filter flags), and the
    filter clips what lies beyond the honest uploads' median radius."""
    updates, u = _fleet(0, 0, 0.0)
    own = torch.stack([0.5 * u, 0.5 * u])  # the attackers' clean updates point along u
    view = EdgeView(edge=0, vehicles=[8, 9], own=own, reference=torch.zeros(D), generator=torch.Generator().manual_seed(5),
                    total=10, honest=updates)  # fmt: skip
    attack = get_attack("median_aware", training=TRAINING.model_dump(), num_samples=N)
    sent = attack.collude(view)
    push = -float(sent.mean(0) @ u)
    envelope = get_attack("envelope_aware", training=TRAINING.model_dump(), num_samples=N)._push.step
    assert 0 < push < envelope
    result = get_filter("signal_median", training=TRAINING)(torch.cat([updates, sent]), torch.full((10,), float(N)), torch.zeros(D))
    assert bool(result.keep.all())
    assert bool((result.info["shrink"][8:] < 0.9).all())  # beyond the median radius: clipped back to it


def test_without_dp_nothing_is_flagged_or_clipped() -> None:
    """No noise, no signal estimate: a raw distance test would flag diverse honest
    vehicles, so the filter passes everything through."""
    updates = torch.tensor([[0.0, 1.0], [0.0, 1.1], [0.0, 0.9], [50.0, -50.0]])
    result = get_filter("signal_median", training=TRAINING.model_copy(update={"dp": False}))(
        updates, torch.full((4,), float(N)), torch.zeros(2))
    assert bool(result.keep.all()) and result.updates is None


def test_with_noisy_counts_the_noise_is_read_from_each_upload() -> None:
    """Registered counts carry N(0, 20²): n = 200 may be 120–280, so B = 0.1·n and v range
    over a factor of 5, d·(v_high − v_low) ≈ 28 against an attacker's excess of ≈ 12
    (a correction at mid-range keeps the attackers). Read from the uploads' own
    coordinates, v̂ is within its stated error of the truth, the honest uploads are kept
    and the push by −3·u is still flagged."""
    n, g = 200, torch.Generator().manual_seed(3)
    v = noise_variance(TRAINING.local(), n)
    u = torch.zeros(D)
    u[:100] = 0.1
    signals = [0.5 * u + 0.2 * torch.randn(D, generator=g) / math.sqrt(D) for _ in range(8)] + [-3.0 * u] * 2
    updates = torch.stack(signals) + math.sqrt(v) * torch.randn(10, D, generator=g)
    estimate = noise_estimate(updates, torch.zeros(D))
    assert bool(((estimate / v - 1).abs() < 4 * MEDIAN_SE / math.sqrt(D)).all())
    declared = torch.tensor([n + 20.0 * k for k in (-2, -1, 0, 1, 2, -2, 0, 2, 1, -1)])
    result = get_filter("signal_median", training=TRAINING, count_noise=20.0)(updates, declared, torch.zeros(D))
    assert result.keep.tolist() == [True] * 8 + [False] * 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_colluders_at_an_edge_of_five_pass_the_geometric_median_but_not_the_majority_mean(seed: int) -> None:
    """Three honest vehicles with diverse signals and two colluders sending the same push
    (the envelope backdoor's case in the matrix, docs/algorithms.md §8.4): the geometric
    median sits between the two groups, the honest distances and with them the threshold
    grow, and the colluders are kept; measured from the mean of the majority nearest it
    they are flagged and no honest upload is."""
    updates, _ = _fleet(seed, 2, -3.0, honest=3, spread=1.0)
    sizes, reference = torch.full((5,), float(N)), torch.zeros(D)
    assert get_filter("signal_median", training=TRAINING, clip=False)(updates, sizes, reference).keep.all()
    result = get_filter("signal_median", training=TRAINING, clip=False, centre="majority_mean")(updates, sizes, reference)
    assert result.keep.tolist() == [True, True, True, False, False]
    assert result.info["alpha"].tolist() == pytest.approx([1 / 3] * 3 + [0.0] * 2)


@pytest.mark.parametrize("seed", [7, 9])
def test_an_upload_whose_signal_is_mostly_noise_does_not_define_the_centre(seed: int) -> None:
    """Five honest vehicles, one with a tenth of the others' data and so 41 times their
    noise variance: its corrected energy is a guess (−0.15 or 0.05 against 0.33), and
    ranked by distance alone it seems to sit at the centre, joins the majority and two
    honest uploads are flagged on these seeds. Ranked by distance plus its correction
    error it stays out of the majority and every upload is kept."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(D)
    u[:100] = 0.1
    signals = torch.stack([0.5 * u + 0.3 * torch.randn(D, generator=g) / math.sqrt(D) for _ in range(5)])
    variance = torch.tensor([V] * 4 + [noise_variance(TRAINING.local(), 100)])
    updates = signals + variance.sqrt()[:, None] * torch.randn(5, D, generator=g)
    sizes = torch.tensor([float(N)] * 4 + [100.0])
    result = get_filter("signal_median", training=TRAINING, clip=False, centre="majority_mean")(updates, sizes, torch.zeros(D))
    assert bool(result.keep.all())
    assert float(result.info["alpha"][4]) == 0.0


def test_majority_mean_stops_when_the_majority_is_stable() -> None:
    """Points 0, 1, 2 and 10, 11 on a line: the majority is {0, 1, 2}, its mean 1."""
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=torch.float64)
    h = x @ x.T
    alpha, dist = majority_mean(h, distances_to(h, torch.full((5,), 0.2, dtype=torch.float64)), torch.zeros(5, dtype=torch.float64))
    assert alpha.tolist() == pytest.approx([1 / 3] * 3 + [0.0] * 2)
    assert dist.tolist() == pytest.approx([1.0, 0.0, 1.0, 81.0, 100.0])


def test_an_unknown_centre_is_refused() -> None:
    with pytest.raises(ValueError, match="centre"):
        get_filter("signal_median", training=TRAINING, centre="mean")
