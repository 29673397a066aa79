"""The privacy budget: ε after the planned steps is checked before training; past the
budget the vehicle refuses and spends nothing; ε is reported at the task's δ."""

from __future__ import annotations

import math

import pytest
import torch
from eth_account import Account

from bmfl.attacks import get_attack
from bmfl.models import create_model
from bmfl import privacy
from bmfl.privacy import PrivacyAccountant
from chain.anvil import dev_key
from vehicle_client.vehicle import BudgetExceeded, Vehicle
from vehicle_fixtures import CHAIN_ID, assignment, image_data


def eps(steps: int, delta: float = 1e-5, q: float = 8 / 24, sigma: float = 1.0) -> float:
    accountant = PrivacyAccountant(delta)
    accountant.step(q, sigma, steps)
    return accountant.epsilon()


def global_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("bmfl_cnn").state_dict()


def vehicle(budget: float) -> Vehicle:
    return Vehicle(Account.from_key(dev_key(6)), image_data(), CHAIN_ID, epsilon_budget=budget)


def test_refuses_the_round_that_would_exceed_the_budget() -> None:
    one, two = eps(3), eps(6)  # a round is E·⌈24/8⌉ = 3 steps at q = 1/3
    v = vehicle(budget=(one + two) / 2)
    plan = v.plan(assignment().training)
    assert (plan.steps, plan.sampling_rate) == (3, pytest.approx(1 / 3))
    assert v.epsilon(plan=plan) == pytest.approx(one)
    update = v.train(assignment(1), global_state())
    assert update.epsilon == pytest.approx(one) and v.privacy.steps == 3
    with pytest.raises(BudgetExceeded, match="budget"):
        v.train(assignment(2), global_state())
    assert v.privacy.steps == 3  # nothing spent
    assert v.epsilon() == pytest.approx(one)


def test_epsilon_is_reported_at_the_tasks_delta() -> None:
    v = vehicle(budget=math.inf)
    update = v.train(assignment(1, delta=1e-3), global_state())
    assert update.epsilon == pytest.approx(eps(3, delta=1e-3))
    assert v.epsilon() == pytest.approx(eps(3))  # the budget's own δ = 1e-5


def test_training_without_noise_needs_an_unlimited_budget() -> None:
    with pytest.raises(BudgetExceeded):
        vehicle(budget=1e6).train(assignment(1, dp=False), global_state())
    update = vehicle(budget=math.inf).train(assignment(1, dp=False), global_state())
    assert update.epsilon is None


def test_the_budget_error_is_the_cores() -> None:
    assert BudgetExceeded is privacy.BudgetExceeded
    v = vehicle(budget=2.0)
    assert v.privacy.budget == v.epsilon_budget == 2.0 and v.privacy.delta == 1e-5


def test_a_round_is_recorded_once_in_the_vehicles_engine() -> None:
    """Vehicle.train goes through the core's one path; its steps land once."""
    v = vehicle(budget=math.inf)
    for r in (1, 2, 3):
        update = v.train(assignment(r), global_state())
        assert v.privacy.steps == 3 * r and update.steps == 3
        assert update.epsilon == pytest.approx(eps(3 * r))


def test_an_attack_that_does_not_train_spends_no_privacy() -> None:
    v = Vehicle(Account.from_key(dev_key(6)), image_data(), CHAIN_ID, epsilon_budget=1.0, attack=get_attack("same_value"))
    assert v.plan(assignment().training).steps == 0
    v.train(assignment(1), global_state())
    assert v.privacy.steps == 0 and v.epsilon() == 0.0


def test_input_dp_is_released_once_from_the_secure_source_and_composes_with_dp_sgd() -> None:
    v = vehicle(budget=math.inf)
    task = {"input_dp": {"sigma": 2.0, "clip": 5.0}}
    for r in (1, 2):
        update = v.train(assignment(r, **task), global_state())
        expected = PrivacyAccountant(1e-5)
        expected.step(1.0, 2.0)  # the one input release: a Gaussian step at σ_x
        expected.step(8 / 24, 1.0, 3 * r)
        assert update.epsilon == pytest.approx(expected.epsilon())
    assert v.privacy.steps == 1 + 6
    released = v.training_data(assignment(**task).training)
    assert released is v.released and torch.equal(released.y, v.data.y)
    assert not torch.equal(released.x, v.data.x)
    again = Vehicle(Account.from_key(dev_key(6)), image_data(), CHAIN_ID, epsilon_budget=math.inf)
    assert not torch.equal(again.training_data(assignment(**task).training).x, released.x)  # no seed decides the noise


def test_an_input_release_past_the_budget_is_refused_and_spends_nothing() -> None:
    v = vehicle(budget=0.5)  # σ_x = 2 alone spends ≈ 2.2
    with pytest.raises(BudgetExceeded, match="input release"):
        v.train(assignment(1, input_dp={"sigma": 2.0, "clip": 5.0}), global_state())
    assert v.privacy.steps == 0 and v.released is None
