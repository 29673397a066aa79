"""Attacks as pluggable vehicle behaviours (docs/algorithms.md §8), one registry by name.
Add your own with ``@register_attack`` (see ``bmfl.attacks.base``)."""

from bmfl.attacks.agr_agnostic import MinMax, MinSum
from bmfl.attacks.alie import ALIE, z_max
from bmfl.attacks.backdoor import PixelBackdoor, add_trigger, attack_success_rate, trigger_mask
from bmfl.attacks.base import Attack, AttackContext, EdgeView, available_attacks, get_attack, register_attack
from bmfl.attacks.cc_aware import CenteredClipAware
from bmfl.attacks.clip_aware import ClipAware
from bmfl.attacks.collusion import shape_edge_uploads
from bmfl.attacks.behaviour import local_upload
from bmfl.attacks.data_noise import DataNoise
from bmfl.attacks.envelope_aware import EnvelopeAware
from bmfl.attacks.envelope_backdoor import EnvelopeBackdoor
from bmfl.attacks.frame import Frame
from bmfl.attacks.free_rider import FreeRider
from bmfl.attacks.gaussian import GaussianNoise
from bmfl.attacks.ipm import InnerProductManipulation
from bmfl.attacks.label_flip import LabelFlip
from bmfl.attacks.median_aware import MedianAware
from bmfl.attacks.pipeline_aware import PipelineAware
from bmfl.attacks.reliability_aware import ReliabilityAware
from bmfl.attacks.same_value import SameValue
from bmfl.attacks.scaled_backdoor import ScaledBackdoor
from bmfl.attacks.sign_flip import SignFlip
from bmfl.attacks.trust_aware import TrustAware
from bmfl.attacks.tuning_scaling import TuningAndScaling
from bmfl.attacks.white_box import WhiteBox

__all__ = [
    "Attack",
    "AttackContext",
    "EdgeView",
    "shape_edge_uploads",
    "ALIE",
    "CenteredClipAware",
    "ClipAware",
    "EnvelopeAware",
    "EnvelopeBackdoor",
    "Frame",
    "FreeRider",
    "MedianAware",
    "WhiteBox",
    "z_max",
    "InnerProductManipulation",
    "MinMax",
    "MinSum",
    "PipelineAware",
    "ReliabilityAware",
    "ScaledBackdoor",
    "available_attacks",
    "get_attack",
    "register_attack",
    "local_upload",
    "DataNoise",
    "PixelBackdoor",
    "add_trigger",
    "attack_success_rate",
    "trigger_mask",
    "GaussianNoise",
    "LabelFlip",
    "SameValue",
    "SignFlip",
    "TrustAware",
    "TuningAndScaling",
]
