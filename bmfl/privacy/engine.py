"""One vehicle's privacy, owned by one object: its accountant, δ and ε budget (as
Opacus's ``PrivacyEngine`` owns its accountant).

A round of DP-SGD (BMFL Algorithm 1) is planned first — steps, sampling rate q and
noise multiplier σ, a :class:`RoundPlan` — and checked against the budget before
anything is trained (:meth:`PrivacyEngine.check` raises :class:`BudgetExceeded`); once
the round has trained, the training path records its steps with
:meth:`PrivacyEngine.record`. A plan that trains without noise has ε = ∞, and so has
every vehicle that ran one, unless the vehicle released its whole samples through
input DP first (:meth:`PrivacyEngine.release_inputs`): training on them is then
post-processing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from bmfl.privacy.accountant import PrivacyAccountant
from bmfl.privacy.noise import RandomSource, gaussian


DEFAULT_BUDGET = 10.0
"""A vehicle's ε budget at δ = 1e-5 unless its owner sets another (the services' default)."""
COUNT_NOISE = 20.0
"""σ_c: std of the Gaussian noise on the sample count a vehicle registers (sensitivity 1)."""


class BudgetExceeded(RuntimeError):
    """Training would take the vehicle's ε past its budget; nothing was trained or spent."""


class PrivacyRefused(ValueError):
    """A release whose privacy cannot be stated exactly (``reason`` says why); nothing
    was trained or spent."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class RoundPlan:
    """What one local round of Algorithm 1 will run: ``steps`` DP-SGD steps at sampling
    rate q = min(1, B/n) with noise multiplier σ (0: no noise, or no DP)."""

    steps: int
    sampling_rate: float
    noise_multiplier: float

    @property
    def trains(self) -> bool:
        return self.steps > 0

    @property
    def private(self) -> bool:
        """Whether its steps add noise (a plan that does not train spends nothing)."""
        return self.noise_multiplier > 0


class PrivacyEngine:
    """A vehicle's accountant, δ and ε budget (ε_max at δ); ``accountant`` wraps an
    existing accountant (δ and method are then its own)."""

    def __init__(
        self,
        delta: float = 1e-5,
        budget: float = math.inf,
        method: str = "rdp",
        *,
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        if not budget > 0:
            raise ValueError("the ε budget must be > 0")
        self.accountant = accountant if accountant is not None else PrivacyAccountant(delta, method)
        self.budget = budget
        self.unbounded = False  # trained without noise at least once: ε = ∞
        self.inputs_released = False  # input DP applied (bmfl.privacy.input_dp)
        self.post_processing = False  # its whole samples (features and targets) went through input DP
        self._checked: tuple[object, float] | None = None

    @classmethod
    def of(cls, privacy: "PrivacyEngine | PrivacyAccountant | None") -> "PrivacyEngine | None":
        """``privacy`` as an engine: a bare accountant is wrapped (no budget)."""
        if privacy is None or isinstance(privacy, PrivacyEngine):
            return privacy
        if isinstance(privacy, PrivacyAccountant):
            return cls(accountant=privacy)
        raise TypeError(f"expected a PrivacyEngine, got {type(privacy).__name__}")

    @property
    def delta(self) -> float:
        return self.accountant.delta

    @property
    def steps(self) -> int:
        """Private steps recorded so far."""
        return self.accountant.steps

    def epsilon(self, delta: float | None = None, plan: RoundPlan | None = None) -> float:
        """ε spent so far (plus ``plan``'s steps) at ``delta`` (default: the budget's δ);
        ∞ once the vehicle trained without noise, or for such a ``plan``."""
        if self.unbounded or (plan is not None and plan.trains and not plan.private and not self.post_processing):
            return math.inf
        extra = plan is not None and plan.trains
        if not extra and (delta is None or delta == self.delta):
            return self.accountant.epsilon()
        probe = copy.deepcopy(self.accountant)
        probe.delta = self.delta if delta is None else delta
        if extra:
            probe.step(plan.sampling_rate, plan.noise_multiplier, plan.steps)
        return probe.epsilon()

    def check(self, plan: RoundPlan) -> float:
        """ε after ``plan`` at the budget's δ; raises :class:`BudgetExceeded` (nothing is
        spent) when that exceeds the budget. Free with an unlimited budget (returns NaN)."""
        if math.isinf(self.budget):
            return math.nan
        key = (tuple(sorted(self.accountant._steps.items())), self.delta, self.unbounded, plan)
        if self._checked is not None and self._checked[0] == key:
            planned = self._checked[1]
        else:
            planned = self.epsilon(plan=plan)
            self._checked = (key, planned)
        if planned > self.budget:
            raise BudgetExceeded(f"ε would reach {planned:.3g} > budget {self.budget:.3g}")
        return planned

    def record(self, plan: RoundPlan) -> None:
        """Record a round that trained: its private steps go to the accountant; a round
        without noise makes ε infinite from now on."""
        if not plan.trains:
            return
        if not plan.private:
            self.unbounded = self.unbounded or not self.post_processing
            return
        self.accountant.step(plan.sampling_rate, plan.noise_multiplier, plan.steps)

    def release_inputs(self, sigma: float, whole_sample: bool) -> None:
        """Record the vehicle's one input-DP release (``bmfl.privacy.input_dp``): one
        Gaussian step with noise multiplier σ_x (sensitivity C_x under zero-out
        neighbouring), composed with DP-SGD's steps. ``whole_sample``: targets were
        perturbed too, so training without noise afterwards is post-processing.
        :class:`BudgetExceeded` (nothing spent) when the release alone passes the budget."""
        if self.inputs_released:
            raise ValueError("input DP is released once per vehicle; a second release would spend again")
        if not math.isinf(self.budget):
            probe = copy.deepcopy(self.accountant)
            probe.step(1.0, sigma)
            if probe.epsilon() > self.budget:
                raise BudgetExceeded(f"the input release would take ε to {probe.epsilon():.3g} > budget {self.budget:.3g}")
        self.accountant.step(1.0, sigma)
        self.inputs_released = True
        self.post_processing = whole_sample

    def release_count(self, count: int, source: RandomSource, sigma: float = COUNT_NOISE) -> int:
        """``count`` through the Gaussian mechanism (sensitivity 1, std ``sigma``), rounded
        into [1, 2³² − 1]; the release is recorded in the accountant as one Gaussian
        step (sampling rate 1, noise multiplier ``sigma``)."""
        noisy = count + float(gaussian((1,), sigma, source)[0])
        self.accountant.step(1.0, sigma)
        return int(min(max(round(noisy), 1), 2**32 - 1))
