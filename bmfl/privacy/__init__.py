"""Privacy accounting, kept apart from the models and the trainer (as in Opacus): a
vehicle's :class:`PrivacyEngine` owns its :class:`PrivacyAccountant` and ε budget;
:mod:`bmfl.privacy.noise` is where DP randomness comes from (secret, or seeded for
research); :mod:`bmfl.privacy.user_level` accounts DP-FedAvg at an edge."""

from bmfl.privacy.accountant import ACCOUNTANTS, PrivacyAccountant
from bmfl.privacy.engine import (
    COUNT_NOISE, DEFAULT_BUDGET, BudgetExceeded, PrivacyEngine, PrivacyRefused, RoundPlan,
)  # fmt: skip
from bmfl.privacy.noise import InsecureNoise, RandomSource, SecureGenerator, require_secure

__all__ = [
    "ACCOUNTANTS", "COUNT_NOISE", "DEFAULT_BUDGET", "BudgetExceeded", "InsecureNoise", "PrivacyAccountant",
    "PrivacyEngine", "PrivacyRefused", "RandomSource", "RoundPlan", "SecureGenerator", "require_secure",
]  # fmt: skip
