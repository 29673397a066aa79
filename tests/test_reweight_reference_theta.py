"""The authors'-code θ of the residual reweighting (``theta="reference"``, BMFL
§IV-C-3 step 7): θ_m = Σ_n ϖ_n^m·s_n with s_n the unbiased standard deviation of ϖ_n
over the K uploads, then θ ← (θ / max θ)², weights θ / Σθ. Known answers built from
coordinates where every honest value lies on the rank line (ϖ = 1) and one outlier
sits 1e9 residual scales off it (ϖ ≈ 1e-9)."""

import math

import numpy as np

import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.aggregation.reweight import confidences

S = math.sqrt(0.2)  # unbiased std of ϖ = (1, 1, 1, 1, 0): mean 0.8, Σ(ϖ − 0.8)² = 0.8, / (5 − 1)


def columns() -> torch.Tensor:
    """(K = 5, d = 5): an outlier (value 100) for model 4 at coordinates 0 and 2, for
    model 3 at coordinate 1; coordinates 3 and 4 are clean (every ϖ = 1, s = 0)."""
    return torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 10.0],
            [1.0, 1.0, 1.0, 1.0, 11.0],
            [2.0, 2.0, 2.0, 2.0, 12.0],
            [3.0, 100.0, 3.0, 3.0, 13.0],
            [100.0, 3.0, 100.0, 4.0, 14.0],
        ]
    )


def test_confidences_of_the_construction():
    varpi, _ = confidences(columns().T.to(torch.float64), 2.0)
    expected = torch.ones(5, 5, dtype=torch.float64)
    expected[0, 4] = expected[1, 3] = expected[2, 4] = 0.0
    assert torch.allclose(varpi, expected, atol=1e-6)


def test_reference_theta_known_answer():
    r = get_aggregator("reweight", theta="reference")(columns(), None, torch.zeros(5))
    # raw θ = s·(3, 3, 3, 2, 1) (clean coordinates add s = 0); / max → (1, 1, 1, 2/3, 1/3);
    # squared → (1, 1, 1, 4/9, 1/9); Σ = 32/9 → weights (9, 9, 9, 4, 1) / 32
    assert r.info["variant"] == "reference"
    assert r.info["theta"].tolist() == pytest.approx([3 * S, 3 * S, 3 * S, 2 * S, S], rel=1e-6)
    assert r.weights.tolist() == pytest.approx([9 / 32, 9 / 32, 9 / 32, 4 / 32, 1 / 32], rel=1e-6)
    assert r.weights.dtype == torch.float64
    # outliers replaced by the line value (= rank): the corrected columns are 0..4 at
    # coordinates 0–3 (values 0,1,2,3,4 by model, the outlier at rank 4 → 4; coordinate 1:
    # model 3 holds rank 4 → 4, model 4 holds 3)
    corrected = torch.tensor(
        [[0.0, 0, 0, 0, 10], [1, 1, 1, 1, 11], [2, 2, 2, 2, 12], [3, 4, 3, 3, 13], [4, 3, 4, 4, 14]], dtype=torch.float64
    )
    assert r.aggregate.tolist() == pytest.approx((r.weights[:, None] * corrected).sum(0).tolist(), rel=1e-6)
    assert r.info["replaced_fraction"].tolist() == [0, 0, 0, 0.2, 0.4]


def test_paper_theta_on_the_same_construction_differs():
    # paper θ: count of coordinates with ϖ ≥ ς → (5, 5, 5, 4, 3), weights / 22
    r = get_aggregator("reweight", theta="paper")(columns(), None, torch.zeros(5))
    assert r.info["theta"].tolist() == pytest.approx([5, 5, 5, 4, 3], rel=1e-6)
    assert r.weights.tolist() == pytest.approx([5 / 22, 5 / 22, 5 / 22, 4 / 22, 3 / 22], rel=1e-6)


def test_reference_theta_is_chunk_independent():
    y = columns()
    a = get_aggregator("reweight", theta="reference", chunk_size=1)(y, None, torch.zeros(5))
    b = get_aggregator("reweight", theta="reference", chunk_size=4096)(y, None, torch.zeros(5))
    assert torch.allclose(a.weights, b.weights) and torch.allclose(a.aggregate, b.aggregate)


def test_reference_theta_one_upload_and_zero_spread():
    # K = 1: no spread, θ = 0 → the single upload gets weight 1
    one = torch.tensor([[1.0, 2.0]])
    r = get_aggregator("reweight", theta="reference")(one, None, torch.zeros(2))
    assert r.weights.tolist() == [1.0] and r.aggregate.tolist() == [1.0, 2.0]
    assert r.info["theta"].tolist() == [0.0]  # not the NaN of a one-sample std
    # all five clean columns: s = 0 everywhere → equal weights, raw θ all 0
    clean = columns()[:, 3:]
    r = get_aggregator("reweight", theta="reference")(clean, None, torch.zeros(2))
    assert r.info["theta"].tolist() == [0.0] * 5
    assert r.weights.tolist() == [0.2] * 5


def test_reference_theta_below_one_is_still_normalised_and_squared():
    # outliers: model 4 at coordinate 0, model 3 at coordinate 1 → raw θ = s·(2, 2, 2, 1, 1),
    # max 2s ≈ 0.89 < 1; squared after / max: (1, 1, 1, 1/4, 1/4) → weights (4, 4, 4, 1, 1) / 14
    y = columns()[:, [0, 1, 3]]
    r = get_aggregator("reweight", theta="reference")(y, None, torch.zeros(3))
    assert r.info["theta"].tolist() == pytest.approx([2 * S, 2 * S, 2 * S, S, S], rel=1e-6)
    assert r.weights.tolist() == pytest.approx([4 / 14, 4 / 14, 4 / 14, 1 / 14, 1 / 14], rel=1e-6)


def test_replaced_fraction_accumulates_over_chunks():
    for chunk in (1, 2, 4096):
        r = get_aggregator("reweight", theta="reference", chunk_size=chunk)(columns(), None, torch.zeros(5))
        assert r.info["replaced_fraction"].tolist() == [0, 0, 0, 0.2, 0.4], chunk


def test_threshold_one_replaces_even_perfect_fits():
    # ϖ = 1 is not below ς = 1: nothing replaced, paper θ counts every coordinate
    r = get_aggregator("reweight", threshold=1.0)(columns()[:, 3:], None, torch.zeros(2))
    assert r.info["replaced_fraction"].tolist() == [0.0] * 5
    assert r.info["theta"].tolist() == [2.0] * 5


def test_reweight_parameters():
    rule = get_aggregator("reweight")
    assert (rule.lam, rule.threshold, rule.theta) == (2.0, 0.1, "paper")
    for ok in [dict(lam=1e-9), dict(threshold=0.0), dict(threshold=1.0), dict(chunk_size=1)]:
        get_aggregator("reweight", **ok)
    for bad in [dict(lam=0.0), dict(lam=-1.0), dict(threshold=-0.01), dict(threshold=1.01), dict(chunk_size=0)]:
        with pytest.raises(ValueError, match=r"^need lam > 0, threshold in \[0, 1\], chunk_size >= 1$"):
            get_aggregator("reweight", **bad)
    with pytest.raises(ValueError, match=r"^theta must be one of \('paper', 'reference'\)$"):
        get_aggregator("reweight", theta="median")


def test_default_lambda_sets_the_clipping_point():
    # y = 0, 1.2, 1.9, 3.1, 6: the last value's ϖ = Z·sqrt(1 − h)/|e| lies in (ς, 1) and
    # Z = λ·sqrt(2/K) is proportional to λ, so λ = 3 gives 1.5 × the default λ = 2's ϖ
    y = torch.tensor([[0.0], [1.2], [1.9], [3.1], [6.0]])
    default = get_aggregator("reweight")(y, None, torch.zeros(1))
    other = get_aggregator("reweight", lam=3.0)(y, None, torch.zeros(1))
    assert default.info["theta"][:4].tolist() == [1.0] * 4 and 0.1 < default.info["theta"][4] < 1
    assert other.info["theta"][4].item() == pytest.approx(1.5 * default.info["theta"][4].item(), rel=1e-5)


def _reference_confidences(y: np.ndarray, lam: float) -> np.ndarray:
    """ϖ of one coordinate's K values, written out from Eq. 14–19 in float64 NumPy."""
    k = len(y)
    if k <= 2:
        return np.ones(k)
    ys = np.sort(y)
    inner = [np.median([(ys[j] - ys[i]) / (j - i) for j in range(k) if j != i]) for i in range(k)]
    beta1 = np.median(inner)
    beta0 = np.median(ys) - beta1 * (k - 1) / 2
    ranks = np.empty(k)
    ranks[np.argsort(y, kind="stable")] = np.arange(k)
    residual = y - (beta0 + beta1 * ranks)
    tau = 1.4826 * (1 + 5 / (k - 1)) * np.median(np.sort(np.abs(residual))[1:]) + 1e-7
    xbar = (k - 1) / 2
    leverage = 1 / k + (ranks - xbar) ** 2 / np.sum((np.arange(k) - xbar) ** 2)
    z = lam * np.sqrt(2 / k)
    with np.errstate(divide="ignore", invalid="ignore"):
        varpi = np.minimum(1.0, z * np.sqrt(1 - leverage) / np.abs(residual / tau))
    return np.nan_to_num(varpi, nan=1.0)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("lam", [1.0, 2.0])
def test_confidences_match_the_written_out_equations(k, lam):
    rng = np.random.default_rng(k)
    y = rng.normal(size=(40, k))
    y[::4, rng.integers(k)] += 8.0  # an outlier in every fourth coordinate
    varpi, _ = confidences(torch.from_numpy(y), lam)
    want = np.stack([_reference_confidences(row, lam) for row in y])
    assert np.allclose(varpi.numpy(), want, rtol=1e-9, atol=1e-12)
    if k >= 4:  # K = 2 is all ones by definition; with K = 3 the line fits closely
        assert 0.0 < want.min() < 0.99  # the cases exercise the clipping, not only ϖ = 1
