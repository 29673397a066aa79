import math

import pytest

from bmfl.privacy import BudgetExceeded, PrivacyAccountant, PrivacyEngine, RoundPlan

Q, SIGMA, DELTA = 64 / 1200, 2.0, 1e-5


@pytest.mark.parametrize(
    "steps, rdp, pld",
    [(94, 1.27, 1.14), (938, 4.18, 3.84), (4688, 10.50, 9.76)],
)
def test_known_answers_from_algorithms_md(steps, rdp, pld):
    for method, expected in (("rdp", rdp), ("pld", pld)):
        acc = PrivacyAccountant(DELTA, method)
        acc.step(Q, SIGMA, steps)
        assert acc.epsilon() == pytest.approx(expected, rel=0.02), method


def test_steps_compose_incrementally_and_zero_before_any_step():
    acc = PrivacyAccountant(DELTA)
    assert acc.epsilon() == 0.0
    for _ in range(4):
        acc.step(Q, SIGMA, 1172)
    assert acc.steps == 4688
    assert acc.epsilon() == pytest.approx(10.50, rel=0.02)


def test_more_noise_spends_less():
    low, high = PrivacyAccountant(DELTA), PrivacyAccountant(DELTA)
    low.step(Q, 1.0, 100)
    high.step(Q, 4.0, 100)
    assert high.epsilon() < low.epsilon()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PrivacyAccountant(DELTA, "moments")
    with pytest.raises(ValueError):
        PrivacyAccountant(0.0)
    with pytest.raises(ValueError):
        PrivacyAccountant(DELTA).step(0.0, SIGMA)


def test_the_engine_checks_a_plan_against_its_budget_and_records_it_once():
    plan = RoundPlan(4_688, Q, SIGMA)
    engine = PrivacyEngine(DELTA, budget=11.0)
    assert engine.check(plan) == pytest.approx(10.50, rel=0.02) and engine.steps == 0  # checking spends nothing
    engine.record(plan)
    assert engine.steps == 4_688 and engine.epsilon() == pytest.approx(10.50, rel=0.02)
    assert engine.epsilon(delta=1e-3) < engine.epsilon()  # at any δ
    with pytest.raises(BudgetExceeded, match="budget"):
        engine.check(RoundPlan(2_000, Q, SIGMA))  # ε ≈ 13.0 > 11
    assert engine.steps == 4_688
    wrapped = PrivacyEngine.of(engine.accountant)
    assert wrapped.accountant is engine.accountant and math.isinf(wrapped.budget) and PrivacyEngine.of(engine) is engine
