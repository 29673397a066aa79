"""Self-reliability (BMFL Eq. 11) at its edges: Λ exactly on the threshold is kept
(``Λ < T`` is what rejects), and the round term χ/r at rounds past the first, for both
the paper's absolute threshold and the default reference-relative one. Accuracies come
from a stub evaluator; every number is exact in float64 (dyadic fractions)."""

import math

import pytest
import torch

from bmfl.aggregation import compose, get_aggregator
from bmfl.filters import get_filter

REF = torch.tensor([1.0, 1.0, -1.0, 2.0])
CLOSE = torch.tensor([1.5, 1.0, -1.0, 2.0])  # D = 0.25 raw (‖w̃ − w‖²), same direction
FAR = torch.tensor([3.0, 1.0, -1.0, 2.0])  # D = 4 raw


def stub(mapping: dict[float, float]):
    """Accuracy looked up by a vector's first coordinate."""
    return lambda vectors: torch.tensor([mapping[float(v[0])] for v in vectors], dtype=torch.float64)


def test_lambda_equal_to_an_absolute_threshold_is_kept():
    # Λ = (1 + 0.5/1)·0.5 − 0.25 = 0.5 exactly
    ev = stub({1.5: 0.5})
    at = get_filter("self_reliability", evaluate=ev, threshold=0.5, normalize="none")(CLOSE[None], None, REF)
    assert at.info["reliability"].tolist() == [0.5]
    assert at.keep.tolist() == [True]
    above = get_filter("self_reliability", evaluate=ev, threshold=math.nextafter(0.5, 1.0), normalize="none")
    assert above(CLOSE[None], None, REF).keep.tolist() == [False]


@pytest.mark.parametrize("round_index", [1, 3, 7])
def test_upload_equal_to_the_reference_sits_exactly_on_the_default_threshold(round_index):
    # w̃ = w^{r-1}: D = 0, α = α_ref, so Λ = (1 + χ/r)·α_ref = T_Λ with tolerance 0
    alpha = 0.3  # not dyadic: equality must still hold, both sides are the same float64 product
    ev = stub({1.0: alpha})
    f = get_filter("self_reliability", evaluate=ev, tolerance=0.0, normalize="none")
    res = f(REF[None].clone(), None, REF, round_index=round_index)
    assert res.info["reliability"].item() == res.info["threshold"]
    assert res.keep.tolist() == [True]
    # a hair worse than the reference model is rejected
    worse = get_filter("self_reliability", evaluate=stub({1.0: alpha}), tolerance=-1e-12, normalize="none")
    assert worse(REF[None].clone(), None, REF, round_index=round_index).keep.tolist() == [False]


@pytest.mark.parametrize(
    "round_index, expected",
    [(1, [1.5 * 0.8 - 0.25, 1.5 * 0.75 - 4.0]), (2, [1.25 * 0.8 - 0.25, 1.25 * 0.75 - 4.0]), (4, [1.125 * 0.8 - 0.25, 1.125 * 0.75 - 4.0])],
)
def test_reliability_uses_chi_over_r(round_index, expected):
    ev = stub({1.5: 0.8, 3.0: 0.75})
    f = get_filter("self_reliability", evaluate=ev, threshold=0.7, normalize="none")
    res = f(torch.stack([CLOSE, FAR]), None, REF, round_index=round_index)
    assert res.info["reliability"].tolist() == expected
    # Λ of the close upload: 0.95, 0.75, 0.65 against T = 0.7 → kept, kept, dropped
    assert res.keep.tolist() == [round_index < 4, False]


def test_default_threshold_uses_chi_over_r():
    # α_ref = 0.5, tolerance 1: T = (1 + 0.5/r)·0.5 − 1 → −0.25, −0.375, −0.4375 at r = 1, 2, 4
    ev = stub({1.0: 0.5, 1.5: 0.25})
    f = get_filter("self_reliability", evaluate=ev, tolerance=1.0, normalize="none")
    for r, threshold in [(1, -0.25), (2, -0.375), (4, -0.4375)]:
        res = f(CLOSE[None], None, REF, round_index=r)
        assert res.info["threshold"] == threshold
        assert res.info["alpha_reference"] == 0.5
    # Λ(close) = (1 + 0.5/r)·0.25 − 0.25: 0.125, 0.0625, 0.03125: all above
    # a custom χ = 4 separates the rounds: T = (1 + 4/r)·0.5 − 1 = 1.5 at r = 1, 0 at r = 4;
    # Λ = (1 + 4/r)·0.25 − 0.25 = 1.0 at r = 1 (dropped), 0.25 at r = 4 (kept)
    f = get_filter("self_reliability", evaluate=ev, chi=4.0, tolerance=1.0, normalize="none")
    assert f(CLOSE[None], None, REF, round_index=1).keep.tolist() == [False]
    assert f(CLOSE[None], None, REF, round_index=4).keep.tolist() == [True]


def test_round_index_reaches_the_filter_through_compose():
    ev = stub({1.5: 0.8, 3.0: 0.75})
    rule = compose(get_aggregator("fedavg"), get_filter("self_reliability", evaluate=ev, threshold=0.7, normalize="none"))
    ups = torch.stack([CLOSE, FAR])
    assert rule(ups, None, REF, round_index=2).weights.tolist() == [1.0, 0.0]
    assert rule(ups, None, REF, round_index=4).weights.tolist() == [0.0, 0.0]


def test_the_default_tolerance_is_the_documented_25():
    # docs/algorithms.md §2: one default, 25; α_ref = 0.5 at r = 1 → T = 1.5·0.5 − 25
    ev = stub({1.0: 0.5, 1.5: 0.25})
    res = get_filter("self_reliability", evaluate=ev, normalize="none")(CLOSE[None], None, REF, round_index=1)
    assert res.info["threshold"] == -24.25
