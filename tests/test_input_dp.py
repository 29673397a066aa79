"""Local DP on inputs (BAFDP, seed 000; bmfl.privacy.input_dp)."""

import math

import dp_accounting
import pytest
import torch
from dp_accounting import pld, rdp

from bmfl.data import TensorData
from bmfl.privacy import PrivacyEngine, SecureGenerator
from bmfl.privacy.engine import RoundPlan
from bmfl.privacy.input_dp import clip_rows, perturb, privatise
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.task import TrainingSpec

ZERO_OUT = dp_accounting.NeighboringRelation.REPLACE_SPECIAL


def _library_epsilon(events, delta, method="rdp"):
    accountant = (rdp.RdpAccountant(neighboring_relation=ZERO_OUT) if method == "rdp"
                  else pld.PLDAccountant(neighboring_relation=ZERO_OUT))  # fmt: skip
    for event, count in events:
        accountant.compose(event, count)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_the_input_release_spends_the_gaussian_mechanisms_epsilon(method):
    engine = PrivacyEngine(1e-5, method=method)
    engine.release_inputs(2.0, whole_sample=False)
    expected = _library_epsilon([(dp_accounting.GaussianDpEvent(2.0), 1)], 1e-5, method)
    assert engine.epsilon() == pytest.approx(expected, rel=1e-3)
    assert 1.0 < engine.epsilon() < 3.0  # σ = 2: ε ≈ 2.2 at δ = 1e-5


def test_input_dp_composes_with_dp_sgd_under_zero_out_neighbouring():
    engine = PrivacyEngine(1e-5)
    engine.release_inputs(3.0, whole_sample=False)
    engine.record(RoundPlan(steps=50, sampling_rate=0.05, noise_multiplier=1.0))
    expected = _library_epsilon([
        (dp_accounting.GaussianDpEvent(3.0), 1),
        (dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.0)), 50),
    ], 1e-5)  # fmt: skip
    assert engine.epsilon() == pytest.approx(expected, rel=1e-9)
    alone = PrivacyEngine(1e-5)
    alone.record(RoundPlan(steps=50, sampling_rate=0.05, noise_multiplier=1.0))
    assert engine.epsilon() > alone.epsilon()


def test_the_release_happens_once():
    engine = PrivacyEngine(1e-5)
    engine.release_inputs(2.0, whole_sample=True)
    with pytest.raises(ValueError, match="once"):
        engine.release_inputs(2.0, whole_sample=True)


def test_a_vehicle_reuses_its_release_only_for_the_settings_it_was_made_with():
    from eth_account import Account

    from vehicle_client.vehicle import PrivacyRefused, Vehicle

    data = TensorData(torch.randn(40, 6), torch.randint(0, 3, (40,)))
    vehicle = Vehicle(Account.create(), data, 31337)
    asked = TrainingSpec.model_validate({"input_dp": {"sigma": 2.0, "clip": 1.0}})
    first = vehicle.training_data(asked)
    spent = vehicle.epsilon()
    assert vehicle.training_data(TrainingSpec.model_validate({"epochs": 3, "input_dp": {"sigma": 2.0, "clip": 1.0}})) is first
    for other in ({"sigma": 4.0, "clip": 1.0}, {"sigma": 2.0, "clip": 0.5}):
        with pytest.raises(PrivacyRefused, match="input_release_differs"):
            vehicle.training_data(TrainingSpec.model_validate({"input_dp": other}))
    assert vehicle.epsilon() == spent  # nothing spent by a refusal
    assert vehicle.training_data(TrainingSpec()) is data
    vehicle.close()


def test_training_without_noise_is_post_processing_only_for_whole_samples():
    plain = RoundPlan(steps=10, sampling_rate=0.1, noise_multiplier=0.0)
    whole, features = PrivacyEngine(1e-5), PrivacyEngine(1e-5)
    whole.release_inputs(2.0, whole_sample=True)
    features.release_inputs(2.0, whole_sample=False)
    released = whole.epsilon()
    for engine in (whole, features):
        engine.record(plain)
    assert whole.epsilon() == released
    assert math.isinf(features.epsilon())  # the labels went out as they are


def test_clipping_bounds_every_norm_and_keeps_short_rows():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    clipped = clip_rows(x, 1.0)
    assert torch.allclose(clipped.norm(dim=1), torch.tensor([1.0, 0.5, 0.0, 1.0]))
    assert torch.equal(clipped[1], x[1])
    assert torch.allclose(clipped[0], torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize("source", [torch.Generator().manual_seed(0), SecureGenerator()], ids=["seeded", "secure"])
def test_the_noise_has_the_stated_variance(source):
    sigma, clip = 0.5, 3.0
    noisy = perturb(torch.zeros(20_000, 5), clip, sigma, source)  # zero rows: clipping leaves them, noise alone
    assert noisy.mean().abs() < 0.02
    assert noisy.std().item() == pytest.approx(sigma * clip, rel=0.02)


def test_privatise_perturbs_targets_with_features_and_refuses_labels():
    data = TensorData(torch.full((4, 3), 10.0), torch.full((4,), 10.0))
    released = privatise(data, 2.0, 1e-9, True, torch.Generator().manual_seed(0))
    joint = torch.cat([released.x, released.y[:, None]], dim=1)
    assert torch.allclose(joint.norm(dim=1), torch.full((4,), 2.0))
    assert torch.allclose(released.y, torch.full((4,), 1.0))  # (10,10,10,10)/20 · 2
    labels = TensorData(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), num_classes=2)
    with pytest.raises(ValueError, match="class labels"):
        privatise(labels, 1.0, 1.0, True, torch.Generator())
    assert torch.equal(privatise(labels, 1.0, 1.0, False, torch.Generator()).y, labels.y)


def test_a_target_epsilon_is_not_planned_with_input_dp():
    with pytest.raises(ValueError, match="target_epsilon_with_input_dp"):
        TrainingSpec(target_epsilon=8.0, input_dp={"sigma": 1.0, "clip": 1.0})


def _traffic(training, seed=0):
    return SimulationConfig.model_validate({
        "name": "input-dp", "seed": seed, "rounds": 2, "vehicles": 4, "edges": 1, "model": "mlp_forecaster",
        "data": {"name": "traffic_synthetic", "options": {"num_cells": 4, "days": 14}},
        "partition": {"kind": "by_group", "options": {}},
        "aggregation": {"edge": {"name": "fedavg"}, "filters": [], "cloud": {"name": "fedavg"}},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.01, "momentum": 0.5, **training},
    })  # fmt: skip


def test_the_simulators_vehicles_report_the_input_release_and_dp_sgd_together():
    from rich.console import Console

    quiet = Console(quiet=True)
    only_inputs = run_simulation(_traffic({"dp": False, "input_dp": {"sigma": 2.0, "clip": 3.0, "targets": True}}), quiet)
    expected = _library_epsilon([(dp_accounting.GaussianDpEvent(2.0), 1)], 1e-5)
    assert set(only_inputs.epsilons) == {0, 1, 2, 3}
    assert all(e == pytest.approx(expected, rel=1e-3) for e in only_inputs.epsilons.values())
    assert only_inputs.final.epsilon_max == pytest.approx(expected, rel=1e-3)
    both = run_simulation(_traffic({"dp": True, "noise_multiplier": 1.0, "input_dp": {"sigma": 2.0, "clip": 3.0}}), quiet)
    sgd = run_simulation(_traffic({"dp": True, "noise_multiplier": 1.0}), quiet)
    assert all(both.epsilons[v] > max(sgd.epsilons[v], expected) for v in sgd.epsilons)
    assert both.final.loss != sgd.final.loss  # the vehicles trained on perturbed features
