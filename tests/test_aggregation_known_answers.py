"""Hand-computed answers for every aggregation rule on small cases."""

import pytest
import torch

from bmfl.aggregation import available_aggregators, compose, get_aggregator, krum_scores, median
from bmfl.filters import FilterResult, UpdateFilter

# n = 5 points in 2-D: four honest around (1, 1), one far outlier.
V = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [10.0, 10.0]])
REF = torch.zeros(2)


def test_registry_lists_every_rule():
    assert {"fedavg", "krum", "multi_krum", "trimmed_mean", "median", "reweight"} <= set(available_aggregators())
    with pytest.raises(KeyError, match="unknown aggregator"):
        get_aggregator("nope")


def test_fedavg_weights_by_data_size():
    r = get_aggregator("fedavg")(V[:4], torch.tensor([1.0, 2.0, 3.0, 4.0]), REF)
    # 0.1·(0,0) + 0.2·(2,0) + 0.3·(0,2) + 0.4·(1,1) = (0.8, 1.0)
    assert torch.allclose(r.aggregate, torch.tensor([0.8, 1.0]))
    assert torch.allclose(r.weights, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))


def test_krum_scores_and_choice():
    # squared distances: v0: {4, 4, 2, 200}; v1: {4, 8, 2, 164}; v2: {4, 8, 2, 164};
    # v3: {2, 2, 2, 162}; v4: {200, 164, 164, 162}; f = 1 → 2 nearest.
    assert krum_scores(V, f=1).tolist() == [6.0, 6.0, 6.0, 4.0, 326.0]
    r = get_aggregator("krum", f=1)(V, None, REF)
    assert r.aggregate.tolist() == [1.0, 1.0]
    assert r.weights.tolist() == [0, 0, 0, 1, 0]


def test_multi_krum_averages_the_best_m():
    r = get_aggregator("multi_krum", f=1, m=3)(V, None, REF)
    # v3 (4), then the tie v0, v1 (6) by index → mean of (1,1), (0,0), (2,0)
    assert r.info["selected"] == [3, 0, 1]
    assert torch.allclose(r.aggregate, torch.tensor([1.0, 1 / 3]))
    assert torch.allclose(r.weights, torch.tensor([1 / 3, 1 / 3, 0, 1 / 3, 0], dtype=torch.float64))


def test_krum_needs_enough_neighbours():
    with pytest.raises(ValueError, match="n - f - 2"):
        get_aggregator("krum", f=3)(V, None, REF)


def test_trimmed_mean():
    r = get_aggregator("trimmed_mean", beta=1)(V, None, REF)
    # x: 0,0,1,2,10 → mean(0,1,2) = 1; y: 0,0,1,2,10 → 1
    assert r.aggregate.tolist() == [1.0, 1.0]
    # kept values: x from v2, v3, v1; y from v1, v3, v2 → 2 of 6 each
    assert torch.allclose(r.weights, torch.tensor([0, 1 / 3, 1 / 3, 1 / 3, 0], dtype=torch.float64))


def test_trimmed_mean_with_zero_trim_is_the_mean():
    r = get_aggregator("trimmed_mean", beta=0)(V, None, REF)
    assert torch.allclose(r.aggregate, torch.tensor([2.6, 2.6]))
    assert torch.allclose(r.weights, torch.full((5,), 0.2, dtype=torch.float64))
    assert get_aggregator("trimmed_mean", beta_fraction=0.2)(V, None, REF).info["beta"] == 1
    with pytest.raises(ValueError, match="cannot trim"):
        get_aggregator("trimmed_mean", beta=3)(V, None, REF)


def test_coordinate_median_odd_and_even():
    r = get_aggregator("median")(V, None, REF)
    assert r.aggregate.tolist() == [1.0, 1.0]
    assert r.weights.tolist() == [0, 0, 0, 1, 0]
    even = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    r = get_aggregator("median")(even, None, torch.zeros(1))
    assert r.aggregate.tolist() == [2.5]
    assert r.weights.tolist() == [0, 0.5, 0.5, 0]
    assert median(torch.tensor([3.0, 1.0, 2.0, 10.0])).item() == 2.5


def test_reweight_single_coordinate_by_hand():
    # y = 0,1,2,3,100 at ranks 0..4: slopes med_i med_j = 1, β0 = med(y) − 1·2 = 0, so
    # the line is y = x; residuals 0,0,0,0,96; τ = 1e-7; ϖ = 1,1,1,1,≈0 → the outlier
    # is replaced by the line value 4 and gets no weight (paper θ).
    y = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    r = get_aggregator("reweight")(y, None, torch.zeros(1))
    assert r.weights.tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]
    assert r.aggregate.item() == pytest.approx(1.5)
    assert r.info["replaced_fraction"].tolist() == [0, 0, 0, 0, 1]


def _outlier_case(d=100):
    base = torch.arange(5, dtype=torch.float32)[:, None] + torch.arange(d, dtype=torch.float32)[None, :]
    y = base.clone()
    y[4, :10] += 1000.0  # model 4: top outlier at coordinates 0..9
    y[2, 10:20] -= 1000.0  # model 2: bottom outlier at coordinates 10..19
    return base, y


def test_reweight_constructed_outliers_paper_variant():
    base, y = _outlier_case()
    r = get_aggregator("reweight", theta="paper")(y, None, torch.zeros(100))
    # θ = number of coordinates with ϖ ≥ ς: 100 for the clean models, 90 for the two
    assert torch.allclose(r.info["theta"], torch.tensor([100.0, 100, 90, 100, 90], dtype=torch.float64))
    assert torch.allclose(r.weights, torch.tensor([100, 100, 90, 100, 90], dtype=torch.float64) / 480)
    assert r.info["replaced_fraction"].tolist() == [0, 0, 0.1, 0, 0.1]
    # coordinates 0..9: y = n + (0,1,2,3,1004) → line y = n + x, outlier → n + 4 (clean)
    # coordinates 10..19 (by hand, n = 0): sorted −998,0,1,3,4 → β1 = 1.75, β0 = −2.5;
    # the outlier (rank 0) is replaced by −2.5, the honest values are kept.
    w = r.weights.to(torch.float32)
    clean = (w[:, None] * base).sum(0)
    assert torch.allclose(r.aggregate[:10], clean[:10])
    fixed = base[:, 10:20].clone()
    fixed[2] = torch.arange(10, 20) - 2.5
    assert torch.allclose(r.aggregate[10:20], (w[:, None] * fixed).sum(0))
    assert torch.allclose(r.aggregate[20:], clean[20:])


def test_reweight_constructed_outliers_reference_variant():
    _, y = _outlier_case()
    r = get_aggregator("reweight", theta="reference")(y, None, torch.zeros(100))
    w = r.weights
    assert w[0] == w[1] == w[3] and w[0] == w.max()
    assert w[2] < 0.8 * w[0] and w[4] < 0.8 * w[0]
    assert w.sum().item() == pytest.approx(1.0)


def test_reweight_small_k_and_identical_updates():
    two = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    r = get_aggregator("reweight")(two, None, torch.zeros(2))
    assert r.aggregate.tolist() == [2.0, 3.0]
    same = torch.ones(4, 3)
    for theta in ("paper", "reference"):
        r = get_aggregator("reweight", theta=theta)(same, None, torch.zeros(3))
        assert torch.allclose(r.weights, torch.full((4,), 0.25, dtype=torch.float64))
        assert r.aggregate.tolist() == [1.0, 1.0, 1.0]


def test_reweight_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(7, 1000, generator=g)
    a = get_aggregator("reweight", chunk_size=64)(y, None, torch.zeros(1000))
    b = get_aggregator("reweight", chunk_size=4096)(y, None, torch.zeros(1000))
    assert torch.allclose(a.aggregate, b.aggregate) and torch.allclose(a.weights, b.weights)


class _RejectIndices(UpdateFilter):
    def __init__(self, bad):
        self.bad = bad

    def __call__(self, updates, sizes, reference, *, round_index=1):
        keep = torch.ones(len(updates), dtype=torch.bool)
        keep[self.bad] = False
        return FilterResult(keep, {"round": round_index})


def test_filter_wrapper_zero_weights_and_empty_case():
    rule = compose(get_aggregator("fedavg"), _RejectIndices([4]))
    r = rule(V, torch.tensor([1.0, 1, 1, 1, 1]), REF, round_index=3)
    assert r.weights.tolist() == [0.25, 0.25, 0.25, 0.25, 0]
    assert torch.allclose(r.aggregate, torch.tensor([0.75, 0.75]))
    assert r.info["filter"]["round"] == 3
    r = compose(get_aggregator("median"), _RejectIndices([0, 1, 2, 3, 4]))(V, None, torch.tensor([7.0, 8.0]))
    assert r.aggregate.tolist() == [7.0, 8.0] and r.weights.sum() == 0


def test_inputs_are_validated():
    rule = get_aggregator("median")
    with pytest.raises(ValueError, match="finite"):
        rule(torch.tensor([[float("nan"), 0.0]]), None, REF)
    with pytest.raises(ValueError, match="reference"):
        rule(V, None, torch.zeros(3))
    with pytest.raises(ValueError, match="sizes"):
        rule(V, torch.tensor([1.0, -1, 1, 1, 1]), REF)
