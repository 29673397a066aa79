"""``dp_self_reliability``: BMFL's self-reliability with the DP noise taken out of D
(known answers against the envelope's bounds, honest small vehicles kept where the
paper's rule drops them, attackers still refused, no DP = the paper's filter)."""

import math

import pytest
import torch

from bmfl.filters import get_filter
from bmfl.filters.dp_envelope import signal_bound
from bmfl.filters.dp_floor import noise_variance
from bmfl.task import TrainingSpec

D = 20_000
TRAINING = {"epochs": 1, "batch_size": 64, "max_steps": 3, "lr": 0.6, "momentum": 0.5, "noise_multiplier": 1.2,
            "max_sampling_rate": 0.25}  # fmt: skip
CONFIG = TrainingSpec.model_validate(TRAINING).local()


def _accuracy(vectors: torch.Tensor) -> torch.Tensor:
    return torch.full((len(vectors),), 0.5, dtype=torch.float64)


def _uploads(sizes: list[int], seed: int = 0, signal: float = 0.5):
    """w^{r-1} of norm² ≈ D/100 and honest uploads: a signal of norm ``signal`` plus the
    noise each size's DP-SGD adds (small sizes: a small expected batch, much noise)."""
    g = torch.Generator().manual_seed(seed)
    ref = 0.1 * torch.randn(D, generator=g)
    direction = ref / ref.norm()
    rows = [ref + signal * direction + math.sqrt(noise_variance(CONFIG, n)) * torch.randn(D, generator=g) for n in sizes]
    return ref, torch.stack(rows)


def test_the_noise_allowance_is_the_envelopes_bound_without_its_signal_term():
    f = get_filter("dp_self_reliability", evaluate=_accuracy, training=TRAINING)
    v, s, z = noise_variance(CONFIG, 40), signal_bound(CONFIG, 40, 4.0), 4.0
    assert float(f.allowance(torch.tensor([40.0]), D)[0]) == pytest.approx(D * v * (1 + z * math.sqrt(2 / D)) + 2 * z * s * math.sqrt(v))


def test_small_honest_vehicles_are_kept_where_the_papers_distance_drops_them():
    sizes = [12, 20, 40, 80, 300]
    ref, ups = _uploads(sizes)
    n = torch.tensor(sizes, dtype=torch.float64)
    paper = get_filter("self_reliability", evaluate=_accuracy, tolerance=1.0)(ups, n, ref)
    ours = get_filter("dp_self_reliability", evaluate=_accuracy, training=TRAINING, tolerance=1.0)(ups, n, ref)
    assert not paper.keep[:2].any()  # their noise alone is a relative distance above 1
    assert ours.keep.all()
    assert (ours.info["distance"] <= signal_bound(CONFIG, 300, 4.0) ** 2 / ref.pow(2).sum()).all()


def test_what_the_noise_cannot_explain_is_counted_whole():
    sizes = [40, 40]
    ref, ups = _uploads(sizes, seed=1)
    push = torch.zeros(D)
    push[0] = 30.0  # 900 of squared distance on top of an honest upload
    ups[1] += push
    f = get_filter("dp_self_reliability", evaluate=_accuracy, training=TRAINING, normalize="none")
    res = f(ups, torch.tensor([40.0, 40.0]), ref)
    raw = (ups.double() - ref.double()).pow(2).sum(1)
    allowance = f.allowance(torch.tensor([40.0, 40.0]), D)
    assert torch.allclose(res.info["distance"], (raw - allowance).clamp_min(0))
    assert float(res.info["distance"][1]) > 800


def test_sign_flipped_and_same_value_uploads_are_still_refused():
    sizes = [40, 40, 40, 40]
    ref, ups = _uploads(sizes, seed=2)
    ups[2] = ref - (ups[2] - ref) - 2 * ref  # points against w^{r-1}: dir = −1
    ups[3] = torch.full((D,), 100.0)  # same value
    res = get_filter("dp_self_reliability", evaluate=_accuracy, training=TRAINING)(ups, torch.full((4,), 40.0), ref)
    assert res.keep.tolist() == [True, True, False, False]
    assert res.reliability[2] == float("-inf")


def test_without_dp_it_is_the_papers_filter():
    ref, ups = _uploads([40, 80, 300], seed=3)
    n = torch.tensor([40.0, 80.0, 300.0])
    paper = get_filter("self_reliability", evaluate=_accuracy)(ups, n, ref)
    ours = get_filter("dp_self_reliability", evaluate=_accuracy, training={**TRAINING, "dp": False})(ups, n, ref)
    assert torch.equal(paper.reliability, ours.reliability) and torch.equal(paper.keep, ours.keep)


def test_it_needs_the_sizes():
    ref, ups = _uploads([40], seed=4)
    with pytest.raises(ValueError, match="sizes"):
        get_filter("dp_self_reliability", evaluate=_accuracy, training=TRAINING)(ups, None, ref)
