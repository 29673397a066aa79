"""``max_sampling_rate`` (q_max): Poisson batches of a small dataset at q = min(1, B/n,
q_max), with the steps of an epoch, the DP-SGD divisor, the accountant's plan and the
edges' noise model all following the same q."""

import math

import pytest
import torch

from bmfl.data import TensorData
from bmfl.filters import get_filter
from bmfl.filters.dp_envelope import signal_bound
from bmfl.filters.dp_floor import momentum_sums, noise_variance
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.privacy.noise import poisson_mask
from bmfl.task import TrainingSpec
from bmfl.training import LocalTrainingConfig, train_fleet
from bmfl.training.local import _batches, expected_batch, round_plan, sampling_rate

CAPPED = LocalTrainingConfig(epochs=1, batch_size=64, lr=0.3, momentum=0.5, noise_multiplier=1.5, max_sampling_rate=0.25)


def test_the_cap_binds_only_below_b_over_q_max_samples():
    assert sampling_rate(CAPPED, 40) == 0.25 and expected_batch(CAPPED, 40) == 10.0
    assert round_plan(CAPPED, 40).steps == 4  # an epoch is ⌈1/q⌉ expected batches
    assert sampling_rate(CAPPED, 1000) == 0.064 and expected_batch(CAPPED, 1000) == 64
    assert round_plan(CAPPED, 1000).steps == 16  # ⌈1000/64⌉, as without the cap
    uncapped = LocalTrainingConfig(epochs=1, batch_size=64)
    assert (sampling_rate(uncapped, 40), expected_batch(uncapped, 40), round_plan(uncapped, 40).steps) == (1.0, 40, 1)


def test_batches_are_drawn_at_the_capped_rate():
    gen = torch.Generator().manual_seed(0)
    sizes = [len(idx) for _ in range(100) for idx in _batches(40, CAPPED, gen, torch.device("cpu"))]
    assert len(sizes) == 400
    mean = sum(sizes) / len(sizes)  # Binomial(40, 0.25): mean 10, sd of the mean √7.5/20 ≈ 0.14
    assert abs(mean - 10) < 0.6


def test_a_capped_vehicle_spends_less_privacy_for_the_same_steps():
    spec = dict(epochs=1, batch_size=64, max_steps=1, noise_multiplier=1.5)
    capped = TrainingSpec(**spec, max_sampling_rate=0.25)
    full = TrainingSpec(**spec)
    assert capped.plans(8, [40]) == {(0.25, 8)} and full.plans(8, [40]) == {(1.0, 8)}
    assert capped.epsilon(8, [40]) < full.epsilon(8, [40]) / 2
    spec.pop("noise_multiplier")
    calibrated = TrainingSpec(**spec, max_sampling_rate=0.25, target_epsilon=8.0)
    uncapped = TrainingSpec(**spec, target_epsilon=8.0)
    assert calibrated.calibrated(8, [40]).noise_multiplier < uncapped.calibrated(8, [40]).noise_multiplier


def test_the_edges_noise_model_divides_by_the_capped_batch():
    c1, c2 = momentum_sums(4, 0.5)
    assert noise_variance(CAPPED, 40) == pytest.approx((0.3 * 1.5 * 1.0 / 10) ** 2 * c2)
    kappa = 1 + 4 * math.sqrt((1 - 0.25) / 10)
    assert signal_bound(CAPPED, 40, 4.0) == pytest.approx(0.3 * 1.0 * kappa * c1)


def test_honest_capped_uploads_pass_the_dp_envelope():
    """Real DP-SGD uploads of small vehicles trained with the cap: the envelope, told
    the same training, keeps them all."""
    model = create_model("mlp", hidden=(16,))
    g = torch.Generator().manual_seed(1)
    sizes = [30, 40, 50, 60]
    data = [TensorData(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), 10) for n in sizes]
    trained = train_fleet(model, data, CAPPED, [torch.Generator().manual_seed(i) for i in range(len(sizes))])
    ref = flatten(model.state_dict())
    uploads = torch.stack([flatten(t.state) for t in trained])
    training = {"epochs": 1, "batch_size": 64, "lr": 0.3, "momentum": 0.5, "noise_multiplier": 1.5, "max_sampling_rate": 0.25}
    result = get_filter("dp_envelope", training=training)(uploads, torch.tensor(sizes, dtype=torch.float64), ref)
    assert result.keep.all()
    assert (result.info["norm_ratio"] - 1).abs().max() < 0.1


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_a_cap_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError):
        LocalTrainingConfig(max_sampling_rate=bad)
    with pytest.raises(ValueError):
        TrainingSpec(max_sampling_rate=bad)


def test_a_task_cannot_make_an_epoch_longer_than_100_steps():
    """⌈1/q_max⌉ steps an epoch: a publisher's tiny cap would make every vehicle train without end."""
    with pytest.raises(ValueError, match="greater than or equal to 0.01"):
        TrainingSpec(max_sampling_rate=0.001)
    assert round_plan(TrainingSpec(epochs=1, max_sampling_rate=0.01).local(), 20).steps == 100


def test_fixed_batches_have_no_rate_to_cap():
    with pytest.raises(ValueError, match="Poisson"):
        LocalTrainingConfig(dp=False, sampling="fixed", max_sampling_rate=0.5)


def test_poisson_mask_draws_at_rate_q():
    gen = torch.Generator().manual_seed(2)
    assert abs(sum(len(poisson_mask(1000, 0.25, gen)) for _ in range(20)) / 20_000 - 0.25) < 0.01
