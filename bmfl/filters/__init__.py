"""Malicious-update filters and data sanitization: the self-reliability filter (BMFL
Eq. 11–13), the L2-norm anomaly detector (`001` §V-D) and adjacent-distance sanitization
for time series (`001` §V-A), and the issue-17 defences: adaptive norm clipping,
DnC's spectral filter, a scale-free accuracy test, the DP noise floor, the DP-SGD envelope
(norm and pairwise Gram bounds), a noise-aware floor along the root update and one per
class of the test set, the geometric median of the uploads' signals with the DP
noise taken out of the distances, and leave-out testing of the aggregate on the test set. Update filters share one registry (``get_filter``)."""

from bmfl.filters.accuracy_test import AccuracyTest
from bmfl.filters.base import FilterResult, UpdateFilter, available_filters, get_filter, register_filter
from bmfl.filters.class_floor import ClassFloor
from bmfl.filters.dnc import DivideAndConquer
from bmfl.filters.dp_envelope import DPEnvelope
from bmfl.filters.dp_floor import DPNoiseFloor
from bmfl.filters.dp_self_reliability import DPSelfReliabilityFilter
from bmfl.filters.l2_norm import L2NormDetector, norm_bounds
from bmfl.filters.leave_out import LeaveOut
from bmfl.filters.norm_clip import NormClip
from bmfl.filters.root_floor import RootFloor
from bmfl.filters.sanitization import adjacent_distance, sanitize
from bmfl.filters.signal_median import SignalMedian
from bmfl.filters.self_reliability import (
    Evaluator,
    SelfReliabilityFilter,
    accuracy_evaluator,
    batched_accuracy_evaluator,
    directions,
    distances,
    reliability,
)

__all__ = [
    "FilterResult",
    "UpdateFilter",
    "available_filters",
    "get_filter",
    "register_filter",
    "AccuracyTest",
    "ClassFloor",
    "DivideAndConquer",
    "DPEnvelope",
    "DPNoiseFloor",
    "DPSelfReliabilityFilter",
    "NormClip",
    "RootFloor",
    "SignalMedian",
    "L2NormDetector",
    "LeaveOut",
    "norm_bounds",
    "adjacent_distance",
    "sanitize",
    "Evaluator",
    "SelfReliabilityFilter",
    "accuracy_evaluator",
    "batched_accuracy_evaluator",
    "directions",
    "distances",
    "reliability",
]
