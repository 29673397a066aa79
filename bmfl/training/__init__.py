"""Local training (DP-SGD, BMFL Algorithm 1) and evaluation."""

from bmfl.training.evaluate import Evaluation, evaluate
from bmfl.training.fleet import can_vectorise, fleet_uploads, train_fleet
from bmfl.training.local import LocalTrainingConfig, LocalTrainingResult, train_local

__all__ = [
    "Evaluation", "evaluate", "LocalTrainingConfig", "LocalTrainingResult", "train_local",
    "can_vectorise", "fleet_uploads", "train_fleet",
]  # fmt: skip
