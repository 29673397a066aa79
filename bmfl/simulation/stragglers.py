"""Stragglers: a seeded per-vehicle compute speed and coverage gaps, so the simulator
keeps a simulated wall clock (sync rounds wait for their slowest trainer, async
updates advance per report). Draws use numpy streams of their own, so switching the
model on changes no model, partition or noise draw."""

from __future__ import annotations

import numpy as np

from bmfl.simulation.config import StragglerConfig
from bmfl.training.local import LocalTrainingConfig, expected_batch

_SPEED, _GAP = 0x5EED, 0x6A9  # stream tags


def slowdowns(config: StragglerConfig, vehicles: int, seed: int) -> np.ndarray:
    """Each vehicle's slowdown factor (1 = nominal speed)."""
    rng = np.random.default_rng([seed, _SPEED])
    if config.kind == "lognormal":
        return np.exp(config.sigma * rng.standard_normal(vehicles))
    factors = np.ones(vehicles)
    if config.kind == "slow_fraction":
        slow = rng.permutation(vehicles)[: round(config.slow_fraction * vehicles)]
        factors[slow] = config.slowdown
    return factors


def job_work(steps: int, config: LocalTrainingConfig, samples: int) -> float:
    """A job's work in samples: its steps × the expected batch q·n (``expected_batch``)."""
    return steps * expected_batch(config, samples)


class ComputeClock:
    """Simulated seconds of one vehicle job: compute, then a possible coverage gap."""

    def __init__(self, config: StragglerConfig, vehicles: int, seed: int) -> None:
        self.config, self.seed = config, seed
        self.slowdown = slowdowns(config, vehicles, seed)

    def duration(self, vehicle: int, samples: float, job: int) -> float:
        """Seconds of ``vehicle``'s ``job``-th job over ``samples`` samples (same for a seed)."""
        c = self.config
        seconds = samples * c.seconds_per_sample * float(self.slowdown[vehicle])
        if c.gap_probability > 0:
            rng = np.random.default_rng([self.seed, _GAP, vehicle, job])
            if rng.random() < c.gap_probability:
                seconds += float(rng.exponential(c.gap_mean_s))
        return seconds
