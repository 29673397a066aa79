"""Invariants of every rule, as property tests."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bmfl.aggregation import get_aggregator

RULES = [
    ("fedavg", {}),
    ("krum", {"f": 1}),
    ("multi_krum", {"f": 1, "m": 3}),
    ("trimmed_mean", {"beta": 1}),
    ("median", {}),
    ("reweight", {"theta": "paper"}),
    ("reweight", {"theta": "reference"}),
    ("flame", {}),
]


def _draw(seed, k, d):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g), torch.randint(1, 100, (k,), generator=g).double(), torch.randn(d, generator=g)


@pytest.mark.parametrize("name,params", RULES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(5, 12), d=st.integers(1, 40))
def test_permutation_invariance_and_normalised_weights(name, params, seed, k, d):
    updates, sizes, ref = _draw(seed, k, d)
    rule = get_aggregator(name, **params)
    r = rule(updates, sizes, ref)
    assert bool((r.weights >= 0).all())
    assert r.weights.sum().item() == pytest.approx(1.0, abs=1e-9)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 1))
    p = rule(updates[perm], sizes[perm], ref)
    assert torch.allclose(p.aggregate, r.aggregate, atol=1e-5, rtol=1e-5)
    assert torch.allclose(p.weights, r.weights[perm], atol=1e-9)


@pytest.mark.parametrize("name", ["median", "trimmed_mean"])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(3, 15),
    data=st.data(),
    scale=st.floats(1e3, 1e30),
)
def test_median_and_trimmed_mean_stay_within_honest_values(name, seed, n, data, scale):
    f = data.draw(st.integers(0, (n - 1) // 2))  # f < n/2
    g = torch.Generator().manual_seed(seed)
    honest = torch.randn(n - f, 8, generator=g)
    signs = torch.randint(0, 2, (f, 8), generator=g) * 2 - 1
    outliers = signs * scale * (1 + torch.rand(f, 8, generator=g))
    updates = torch.cat([outliers, honest])
    params = {"beta": f} if name == "trimmed_mean" else {}
    agg = get_aggregator(name, **params)(updates, None, torch.zeros(8)).aggregate
    assert bool((agg >= honest.min(0).values - 1e-5).all())
    assert bool((agg <= honest.max(0).values + 1e-5).all())
