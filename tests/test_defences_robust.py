"""Known answers and invariants for the issue-17 defences: adaptive norm clipping, DnC,
FLAME and the scale-free accuracy test, alone and composed with existing rules."""

from __future__ import annotations

import math

import pytest
import torch

from bmfl.aggregation import compose, get_aggregator
from bmfl.aggregation.flame import majority_cluster
from bmfl.filters import get_filter
from bmfl.filters.accuracy_test import accuracy_margin


def test_norm_clip_scales_to_the_median_norm_and_composes():
    ref = torch.ones(2)
    ups = ref + torch.tensor([[3.0, 0], [0, 4.0], [0, 50.0]])  # norms 3, 4, 50 → bound 4
    res = get_filter("norm_clip")(ups, None, ref)
    assert res.keep.all() and res.info["bound"] == 4.0
    assert torch.allclose(res.updates, ref + torch.tensor([[3.0, 0], [0, 4.0], [0, 4.0]]))
    agg = compose(get_aggregator("fedavg"), get_filter("norm_clip"))(ups, None, ref)
    assert torch.allclose(agg.aggregate, ref + torch.tensor([1.0, 8 / 3]), atol=1e-6)
    fixed = get_filter("norm_clip", bound=1.0)(ups, None, ref)
    assert torch.allclose((fixed.updates - ref).norm(dim=1), torch.ones(3))


def test_dnc_drops_the_outlying_direction():
    torch.manual_seed(0)
    honest = 0.1 * torch.randn(7, 300) + 1.0
    attackers = torch.full((3, 300), 1.0) - 0.5 * torch.sign(honest.mean(0) - 1.0)  # a shared shift
    res = get_filter("dnc", fraction=0.3, subsample=100)(torch.cat([honest, attackers]), None, torch.ones(300))
    assert res.keep.tolist() == [True] * 7 + [False] * 3


def test_dnc_is_reproducible_and_keeps_all_when_sized_for_none():
    ups = torch.randn(10, 50)
    f = get_filter("dnc", subsample=20, seed=3)
    assert torch.equal(f(ups, None, torch.zeros(50), round_index=2).keep, f(ups, None, torch.zeros(50), round_index=2).keep)
    assert get_filter("dnc", fraction=0.0)(ups, None, torch.zeros(50)).keep.all()


def test_flame_majority_cluster_and_clipped_mean():
    ref = torch.zeros(3)
    honest = torch.tensor([[1.0, 0.1, 0], [1.0, -0.1, 0], [2.0, 0, 0.1], [1.0, 0, -0.1]])
    attackers = torch.tensor([[-1.0, 0, 0], [0, 5.0, 0], [0, 0, -9.0]])
    ups = torch.cat([honest, attackers])
    assert majority_cluster(ups.double()).tolist() == [True] * 4 + [False] * 3
    res = get_aggregator("flame", noise=0.0)(ups, None, ref)
    bound = float(ups.norm(dim=1).median())  # 1.005…: the third honest update is clipped to it
    clipped = honest.clone()
    clipped[2] *= bound / float(honest[2].norm())
    assert torch.allclose(res.aggregate, clipped.mean(0), atol=1e-5)
    assert res.weights.tolist() == [0.25] * 4 + [0.0] * 3
    assert [v.reason for v in res.verdicts[4:]] == ["rule:flame"] * 3


def test_flame_noise_scales_with_the_bound_and_is_reproducible():
    ups = torch.randn(6, 4000)
    a = get_aggregator("flame", noise=0.01)(ups, None, torch.zeros(4000))
    b = get_aggregator("flame", noise=0.01)(ups, None, torch.zeros(4000))
    quiet = get_aggregator("flame", noise=0.0)(ups, None, torch.zeros(4000))
    assert torch.equal(a.aggregate, b.aggregate)
    bound = a.info["clip_bound"]
    assert float((a.aggregate - quiet.aggregate).std()) == pytest.approx(0.01 * bound, rel=0.05)


def fixed_accuracies(table):
    return lambda vectors: torch.tensor([table[float(v[0])] for v in vectors], dtype=torch.float64)


def test_accuracy_test_margin_shrinks_with_the_test_set():
    assert accuracy_margin(0.5, 300, 3.0, 0.02) == pytest.approx(3 * math.sqrt(0.5 / 300))
    assert accuracy_margin(0.5, 10_000, 3.0, 0.02) == 0.03 * math.sqrt(0.5) * 1  # 3·√(0.5/10⁴)
    assert accuracy_margin(0.99, 10_000, 3.0, 0.02) == 0.02  # the floor
    assert accuracy_margin(0.5, None, 3.0, 0.05) == 0.05


def test_accuracy_test_flags_only_significant_drops_and_ignores_distance():
    ref = torch.zeros(3)
    # first coordinate indexes the accuracy table; the DP-free upload is tiny, the noisy one large
    evaluate = fixed_accuracies({0.0: 0.80, 1.0: 0.78, 2.0: 0.70, 3.0: 0.10, 1e3: 0.79})
    ups = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [1e3, 50.0, 0]])
    f = get_filter("accuracy_test", evaluate=evaluate, test_size=300)  # margin 3·√(2·.8·.2/300) = 0.0980
    res = f(ups, None, ref)
    assert res.keep.tolist() == [True, False, False, True]
    assert res.threshold == -3.0
    assert float(res.reliability[0]) == pytest.approx(3 * (-0.02) / 0.09798, rel=1e-3)
    agg = compose(get_aggregator("fedavg"), f)(ups, None, ref)
    assert [v.threshold for v in agg.verdicts] == [-3.0] * 4
    assert agg.verdicts[1].reason == "filter:accuracy_test" and agg.verdicts[1].reliability < -3.0


def test_dp_floor_noise_variance_known_answer():
    from bmfl.filters.dp_floor import noise_variance
    from bmfl.training.local import LocalTrainingConfig

    cfg = LocalTrainingConfig(epochs=1, batch_size=64, lr=0.3, momentum=0.5, dp=True, clip=1.0,
                              noise_multiplier=2.0, max_steps=3)
    # T = 3: c = (1.75, 1.5, 1); v = (0.3·2/64)²·(1.75² + 1.5² + 1)
    assert noise_variance(cfg, 1000) == pytest.approx((0.6 / 64) ** 2 * (1.75**2 + 1.5**2 + 1))
    assert noise_variance(cfg, 32) == pytest.approx((0.6 / 32) ** 2 * 1.0)  # one step, B = n = 32
    no_dp = LocalTrainingConfig(epochs=1, batch_size=64, lr=0.3, dp=False)
    assert noise_variance(no_dp, 1000) == 0.0


def test_dp_floor_passes_real_dp_uploads_and_flags_ones_without_noise():
    from bmfl.attacks import AttackContext, local_upload
    from bmfl.data import load_dataset
    from bmfl.models import create_model
    from bmfl.params import flatten
    from bmfl.task import TrainingSpec

    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    train, _ = load_dataset("mnist_5k")
    spec = TrainingSpec(epochs=1, batch_size=64, lr=0.3, momentum=0.5, noise_multiplier=2.0, max_steps=3)
    ref = flatten(model.state_dict())
    uploads, sizes = [], []
    for i, dp in enumerate([True, True, True, False, False]):
        data = train.subset(torch.arange(300 * i, 300 * i + 300))
        cfg = spec.model_copy(update={"dp": dp}).local()
        uploads.append(local_upload(model, data, cfg, AttackContext(ref, torch.Generator().manual_seed(i))))
        sizes.append(300.0)
    f = get_filter("dp_floor", training=spec.model_dump())
    res = f(torch.stack(uploads), torch.tensor(sizes, dtype=torch.float64), ref)
    assert res.keep.tolist() == [True, True, True, False, False]
    assert all(0.95 < s < 1.2 for s in res.reliability[:3].tolist())  # honest: ‖Δ‖² ≈ the noise floor
