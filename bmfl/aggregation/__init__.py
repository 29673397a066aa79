"""Aggregation rules behind one interface and one registry (see ``base``): FedAvg,
Krum, Multi-Krum, trimmed mean, coordinate-wise median, repeated-median residual
reweighting, FLAME (clustering, clipping, noise), FLTrust (trust scores against a root
update), centered clipping, inverse-noise averaging, nearest-neighbour mixing then the signals'
geometric median, DP-FedAvg (user-level DP), BAFDP's L1 sign aggregation (RSA) and FBFL's random-pick
baseline, plus
filter wrappers.

>>> rule = compose(get_aggregator("reweight"), get_filter("self_reliability", evaluate=ev))
>>> result = rule(updates, sizes, reference, round_index=r)
"""

from bmfl.aggregation.base import (
    AggregationResult,
    Aggregator,
    Verdict,
    available_aggregators,
    get_aggregator,
    register_aggregator,
)
from bmfl.aggregation.centered_clip import CenteredClip
from bmfl.aggregation.dp_fedavg import DpFedAvg
from bmfl.aggregation.fedavg import FedAvg
from bmfl.aggregation.flame import Flame
from bmfl.aggregation.fltrust import FLTrust, trust_scores
from bmfl.aggregation.filtered import FilteredAggregator, compose
from bmfl.aggregation.krum import Krum, MultiKrum, krum_scores
from bmfl.aggregation.median import CoordinateMedian
from bmfl.aggregation.mixed_median import MixedMedian
from bmfl.aggregation.noise_weighted import NoiseWeighted
from bmfl.aggregation.random_pick import RandomPick
from bmfl.aggregation.reweight import ResidualReweighting, confidences, repeated_median_line
from bmfl.aggregation.sign_l1 import SignL1
from bmfl.aggregation.stats import median
from bmfl.aggregation.trimmed_mean import TrimmedMean

__all__ = [
    "AggregationResult",
    "Aggregator",
    "NoiseWeighted",
    "Verdict",
    "available_aggregators",
    "get_aggregator",
    "register_aggregator",
    "CenteredClip",
    "DpFedAvg",
    "FedAvg",
    "Flame",
    "FLTrust",
    "trust_scores",
    "FilteredAggregator",
    "compose",
    "Krum",
    "MultiKrum",
    "krum_scores",
    "CoordinateMedian",
    "MixedMedian",
    "RandomPick",
    "ResidualReweighting",
    "confidences",
    "repeated_median_line",
    "SignL1",
    "median",
    "TrimmedMean",
]
