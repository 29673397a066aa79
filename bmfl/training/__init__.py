"""Local training (DP-SGD, BMFL Algorithm 1) and evaluation: one path for one vehicle
and for many (``fleet_uploads``; a single vehicle is a fleet of one)."""

from bmfl.training.evaluate import Evaluation, evaluate
from bmfl.training.fleet import can_vectorise, fleet_uploads, plan_upload, train_fleet
from bmfl.training.local import LocalTrainingConfig, LocalTrainingResult, round_plan, train_local

__all__ = [
    "Evaluation", "evaluate", "LocalTrainingConfig", "LocalTrainingResult", "train_local", "round_plan",
    "can_vectorise", "fleet_uploads", "plan_upload", "train_fleet",
]  # fmt: skip
