import pytest

from bmfl.privacy import PrivacyAccountant

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
