"""σ calibrated to a target ε (bmfl.privacy.calibrate; docs/algorithms.md §1.2): known
answers from Opacus's ``get_noise_multiplier`` for the same (RDP) accountant, the
invariants of the result, and how a task states it (bmfl.task)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bmfl.privacy.calibrate import RTOL, calibrate_sigma, epsilon_of
from bmfl.simulation.config import SimulationConfig
from bmfl.task import TaskDraft, TrainingSpec
from bmfl.training.local import round_plan

DELTA = 1e-5
PAPER = (64 / 1200, 4_688)  # the paper's q and steps (docs/algorithms.md §1.1)


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_matches_opacus_for_the_same_rdp_accountant(target: float) -> None:
    opacus = pytest.importorskip("opacus.accountants.utils")
    theirs = opacus.get_noise_multiplier(target_epsilon=target, target_delta=DELTA, sample_rate=PAPER[0], steps=PAPER[1])
    ours = calibrate_sigma(target, DELTA, [PAPER])
    # both bisect to within 1 % of ε on RDP curves over slightly different orders
    assert ours == pytest.approx(theirs, rel=0.01)
    assert (1 - RTOL) * target <= epsilon_of(ours, [PAPER], DELTA) <= target


def test_known_answer_from_the_accountant_table() -> None:
    """§1.1: σ = 2 spends ε = 10.50 over the paper's 4,688 steps, so 10.5 calls for σ ≈ 2."""
    assert calibrate_sigma(10.5, DELTA, [PAPER]) == pytest.approx(2.0, rel=0.01)


def test_more_budget_means_less_noise() -> None:
    sigmas = [calibrate_sigma(eps, DELTA, [(0.1, 300)]) for eps in (1, 2, 4, 8, 16)]
    assert sigmas == sorted(sigmas, reverse=True) and len(set(sigmas)) == 5


def test_many_plans_are_held_to_the_target_by_the_one_that_spends_most() -> None:
    plans = [(0.4, 240), (0.2, 480), (0.05, 3), (0.4, 100)]  # the last two are dominated
    sigma = calibrate_sigma(4.0, DELTA, plans)
    alone = max(calibrate_sigma(4.0, DELTA, [p]) for p in plans[:2])
    assert sigma == pytest.approx(alone, rel=0.01)
    assert (1 - RTOL) * 4.0 <= epsilon_of(sigma, plans, DELTA) <= 4.0


def test_refuses_what_it_cannot_calibrate() -> None:
    for target, plans in ((0.0, [PAPER]), (1.0, []), (1.0, [(1.5, 10)]), (1.0, [(0.1, 0)])):
        with pytest.raises(ValueError):
            calibrate_sigma(target, DELTA, plans)


def test_a_task_derives_sigma_for_its_rounds_and_plan() -> None:
    draft = TaskDraft(rounds=10, training={"target_epsilon": 8.0, "plan_samples": 640, "epochs": 1})
    # 10 rounds × ⌈640/64⌉ steps at q = 0.1
    assert draft.training.noise_multiplier == pytest.approx(calibrate_sigma(8.0, DELTA, [(0.1, 100)]), rel=1e-12)
    again = TaskDraft.model_validate(draft.model_dump())  # the escrowed spec reads back unchanged
    assert again.training.noise_multiplier == draft.training.noise_multiplier
    assert draft.training.local().noise_multiplier == draft.training.noise_multiplier


@pytest.mark.parametrize(
    "training",
    [
        {"epochs": 1, "max_steps": 3, "max_sampling_rate": 0.25},  # the private preset's: one plan for every size
        {"epochs": 2, "max_steps": 7, "batch_size": 16},  # q = 1 for the smallest, more steps at lower q after
        {"epochs": 3, "max_steps": 10, "batch_size": 32, "max_sampling_rate": 0.3},
    ],
)
def test_without_plan_samples_sigma_is_planned_for_every_size(training: dict) -> None:
    spec = TrainingSpec(target_epsilon=8.0, **training)
    local, bound = spec.local(), spec.plans(1, spec.every_size())
    for n in range(1, 3001):  # every size's plan is matched or exceeded in q and steps by one planned for
        plan = round_plan(local, n)
        assert any(q >= plan.sampling_rate and s >= plan.steps for q, s in bound), n
    draft = TaskDraft(rounds=8, training=spec)
    assert draft.training.noise_multiplier == pytest.approx(calibrate_sigma(8.0, DELTA, spec.plans(8, spec.every_size())), rel=1e-12)
    assert (1 - RTOL) * 8.0 <= draft.training.epsilon(8, spec.every_size()) <= 8.0  # so no size spends more


@pytest.mark.parametrize(
    "training, reason",
    [
        ({"target_epsilon": 8.0}, "target_epsilon_needs_plan_samples"),
        ({"target_epsilon": 8.0, "plan_samples": 640, "epochs": 1, "noise_multiplier": 1.0}, "sigma_disagrees_with_target_epsilon"),
        ({"target_epsilon": 8.0, "dp": False}, "target_epsilon_without_dp"),
    ],
)
def test_a_task_is_refused_with_a_reason(training: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TaskDraft(rounds=10, training=training)


def test_old_tasks_keep_their_stated_sigma_and_a_simulation_plans_on_its_sizes() -> None:
    assert TaskDraft(training={"noise_multiplier": 1.7}).training.noise_multiplier == 1.7
    config = SimulationConfig(rounds=5, training={"target_epsilon": 4.0, "epochs": 1, "max_steps": 3})
    sizes = [50, 160, 400]
    training = config.training.calibrated(config.rounds, sizes)
    # per round: 1 step at q = 1 (50 samples, B = 64), 3 at q = 0.4, 3 at q = 0.16 (dominated)
    plans = [(1.0, 5), (0.4, 15), (0.16, 15)]
    assert training.noise_multiplier == pytest.approx(calibrate_sigma(4.0, DELTA, plans), rel=1e-12)
    assert (1 - RTOL) * 4.0 <= epsilon_of(training.noise_multiplier, plans, DELTA) <= 4.0
    assert TrainingSpec(noise_multiplier=1.0).calibrated(5, sizes).noise_multiplier == 1.0


def test_a_spec_states_what_it_would_spend_without_training() -> None:
    """TrainingSpec.epsilon is the accountant on the spec's plans: the demo's former
    default (E = 2, B = 64, σ = 1) on its vehicles (80 to 304 samples) spends the
    ε = 33.65 its 8-round simulation reported; a calibrated spec spends its target."""
    sizes = [80, 200, 304]
    assert TrainingSpec(epochs=2).epsilon(8, sizes) == pytest.approx(33.6498, abs=1e-3)
    assert TrainingSpec(epochs=2).epsilon(8, sizes) == TrainingSpec(epochs=2).epsilon(8, [80])  # the smallest spends most
    calibrated = TrainingSpec(epochs=2, target_epsilon=8.0).calibrated(8, sizes)
    assert (1 - RTOL) * 8.0 <= calibrated.epsilon(8, sizes) <= 8.0


def test_a_simulation_spends_its_target_on_the_vehicle_that_spends_most() -> None:
    """Every vehicle trains every round (V = 1), so the plan that spends most is spent in
    full: the largest ε any vehicle reports is within 1 % under the target."""
    from rich.console import Console

    from bmfl.simulation import run_simulation

    config = SimulationConfig.model_validate({
        "rounds": 2, "vehicles": 6, "edges": 2, "data": {"name": "mnist_5k", "edge_test_samples": 50},
        "partition": {"kind": "complete_non_iid", "options": {}},
        "training": {"epochs": 1, "max_steps": 2, "lr": 0.3, "momentum": 0.5, "target_epsilon": 3.0},
        "aggregation": {"edge": {"name": "fedavg"}, "filters": [], "cloud": {"name": "fedavg"}},
    })  # fmt: skip
    result = run_simulation(config, Console(quiet=True))
    assert "noise_multiplier" not in config.training.model_fields_set
    assert result.config.training.noise_multiplier > 0 and result.config.training.noise_multiplier != 1.0
    assert (1 - RTOL) * 3.0 <= result.rounds[-1].epsilon_max <= 3.0
