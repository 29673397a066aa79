"""Privacy accounting, kept apart from the models and the trainer (as in Opacus)."""

from bmfl.privacy.accountant import ACCOUNTANTS, PrivacyAccountant

__all__ = ["ACCOUNTANTS", "PrivacyAccountant"]
