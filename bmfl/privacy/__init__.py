"""Privacy accounting, kept apart from the models and the trainer (as in Opacus): a
vehicle's :class:`PrivacyEngine` owns its :class:`PrivacyAccountant` and ε budget."""

from bmfl.privacy.accountant import ACCOUNTANTS, PrivacyAccountant
from bmfl.privacy.engine import BudgetExceeded, PrivacyEngine, RoundPlan

__all__ = ["ACCOUNTANTS", "BudgetExceeded", "PrivacyAccountant", "PrivacyEngine", "RoundPlan"]
