"""Self-reliability (BMFL Eq. 11–13), L2-norm detector (`001` §V-D), sanitization."""

import pytest
import torch

from bmfl.aggregation import compose, get_aggregator
from bmfl.data import TensorData
from bmfl.filters import (
    adjacent_distance,
    available_filters,
    directions,
    get_filter,
    norm_bounds,
    reliability,
    sanitize,
)

REF = torch.tensor([1.0, 1.0, -1.0, 2.0])


def fixed_accuracies(mapping):
    """An evaluator that looks a vector's accuracy up by its first coordinate."""
    return lambda vectors: torch.tensor([mapping[round(float(v[0]), 3)] for v in vectors], dtype=torch.float64)


def test_registry():
    assert {"self_reliability", "l2_norm"} <= set(available_filters())


def test_direction_and_reliability_by_hand():
    ups = torch.tensor([[1.5, 1.0, -1.0, 2.0], [-1.0, -1.0, 1.0, 2.0], [-1.0, -1.0, 1.0, -2.0]])
    # signs of w̃·w: (+,+,+,+) → 4 > 0; (−,−,−,+) → −2; all − → −4
    assert directions(ups, REF).tolist() == [1, -1, -1]
    lam = reliability(torch.tensor([0.8, 0.9, 0.9]), torch.tensor([0.25, 1.0, 1.0]), torch.tensor([1, -1, -1]), 2, 0.5)
    # (1 + 0.5/2)·0.8 − 0.25 = 0.75
    assert lam[0].item() == pytest.approx(0.75)
    assert lam[1].item() == float("-inf")


def test_paper_threshold_with_raw_distance():
    ups = torch.tensor([[1.5, 1.0, -1.0, 2.0], [3.0, 1.0, -1.0, 2.0]])
    ev = fixed_accuracies({1.5: 0.8, 3.0: 0.9})
    f = get_filter("self_reliability", evaluate=ev, threshold=0.0, normalize="none")
    res = f(ups, None, REF, round_index=1)
    # Λ = 1.5·0.8 − 0.25 = 0.95 (kept); 1.5·0.9 − 4 = −2.65 (dropped)
    assert res.info["reliability"].tolist() == pytest.approx([0.95, -2.65])
    assert res.keep.tolist() == [True, False]
    assert res.info["alpha_reference"] is None


def test_default_threshold_is_relative_to_the_reference_model():
    ups = torch.tensor([[1.5, 1.0, -1.0, 2.0], [5.0, 1.0, -1.0, 2.0]])
    ev = fixed_accuracies({1.0: 0.5, 1.5: 0.3, 5.0: 0.9})
    f = get_filter("self_reliability", evaluate=ev, tolerance=1.0)
    res = f(ups, None, REF, round_index=1)
    # ‖w‖² = 7; D = 0.25/7 and 16/7; T = 1.5·0.5 − 1.0 = −0.25
    assert res.info["threshold"] == pytest.approx(-0.25)
    assert res.info["distance"].tolist() == pytest.approx([0.25 / 7, 16 / 7])
    assert res.keep.tolist() == [True, False]
    # the decision for one upload does not depend on the others
    alone = f(ups[:1], None, REF, round_index=1)
    assert alone.keep.tolist() == [True]


def test_self_reliability_rejects_majority_attackers_before_reweighting():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, generator=g) + 2.0
    honest = ref + 0.05 * torch.randn(4, 50, generator=g)
    flipped = ref - 10 * (0.5 * torch.randn(6, 50, generator=g))
    ups = torch.cat([honest, flipped])
    ev = lambda v: torch.full((len(v),), 0.5, dtype=torch.float64)
    rule = compose(get_aggregator("reweight"), get_filter("self_reliability", evaluate=ev, tolerance=1.0))
    r = rule(ups, None, ref, round_index=2)
    assert r.weights[4:].sum() == 0 and r.weights[:4].sum().item() == pytest.approx(1.0)
    # the reweighting rule alone gives the 60 % majority weight
    assert get_aggregator("reweight")(ups, None, ref).weights[4:].sum() > 0.5


def test_l2_norm_detector_by_hand():
    ref = torch.zeros(2)
    ups = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0], [300.0, 400.0]])
    # norms 1,2,3,4,500: μ = 3, σ = med(2,1,0,1,497) = 1 → bounds 120 and 403
    assert norm_bounds(torch.tensor([1.0, 2, 3, 4, 500]), 40, 400) == (120.0, 403.0)
    res = get_filter("l2_norm")(ups, None, ref)
    assert res.keep.tolist() == [True, True, True, True, False]
    res = get_filter("l2_norm", c1=1.0)(ups, None, ref)
    assert res.keep.tolist() == [True, True, True, False, False]


def test_adjacent_distance_and_sanitize():
    # newest first: x = (v_{t-1}, v_{t-2}, v_{t-3}); distance |y − x0| + |x0 − x1| + |x1 − x2|
    x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0], [10.0, 0.0, 10.0]])
    y = torch.tensor([1.0, 0.0, 10.0])
    assert adjacent_distance(x, y).tolist() == [0.0, 4.0, 20.0]
    assert adjacent_distance(x.flip(1), y, newest_first=False).tolist() == [0.0, 4.0, 20.0]
    kept, keep = sanitize(TensorData(x[:, :, None], y[:, None]), fraction=0.34)
    assert keep.tolist() == [True, False, False] and len(kept) == 1
    kept, keep = sanitize(TensorData(x, y), fraction=0.0)
    assert keep.all()
