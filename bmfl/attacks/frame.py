"""Framing: colluders who see the honest uploads of their edge get one of them flagged by
the DP envelope's pairwise test and take its weight, hence its pay (docs/algorithms.md
§8.11, "Framing").

Honest vehicles draw their DP noise independently, so ``dp_envelope`` reads an inner
product between two uploads beyond what independent noise and bounded signals allow as
"these two cannot both be honest", and keeps a largest set of uploads without such a
pair. It cannot tell which of the two copied the other. The colluders train honestly,
with DP, on their own data; each then adds c·Δ_t to its upload, Δ_t = w̃_t − w^{r-1} the
update of the target t, the honest upload that moves the edge's step most (the largest
inner product with the honest uploads' mean update). Each colluder then conflicts with
the target, but not with the other colluders: their shared part c·Δ_t has energy c²·‖Δ_t‖²,
below the pairwise bound where c·‖Δ_t‖² is above it. With two or more colluders at the
edge the largest conflict-free set leaves the target out; with one, the two sets are
equally large and vehicle order decides.

The colluders know the rule and its thresholds: c is the smallest of a geometric grid
for which the envelope, run on the honest uploads and theirs (every declared size taken
as ``num_samples``), flags the target and none of them (with one colluder: for which
the colluder conflicts with the target); without such a c they send their honest uploads.
Their harm to the model is the target's missing update; what they gain is its share of
the edge's payout.
"""

from __future__ import annotations

from typing import Any

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack
from bmfl.filters.dp_envelope import DPEnvelope

GRID = tuple(0.02 * 2 ** (k / 2) for k in range(13))
"""The multiples c of the target's update tried, from 0.02 to 1.28 in steps of √2."""


@register_attack("frame")
class Frame(Attack):
    colludes = True
    knowledge = "omniscient"

    def __init__(self, training: dict[str, Any], num_samples: int = 10_000, z: float = 4.0) -> None:
        if num_samples < 1:
            raise ValueError("need num_samples >= 1")
        self.training = dict(training)
        self.num_samples = num_samples
        self.z = z
        self._envelope = DPEnvelope(self.training, z=z)

    @staticmethod
    def target(honest: torch.Tensor, reference: torch.Tensor) -> int:
        """The honest upload whose update has the largest inner product with the honest
        uploads' mean update."""
        deltas = honest.to(torch.float64) - reference.to(torch.float64)
        return int(torch.argmax(deltas @ deltas.mean(dim=0)))

    def collude(self, view: EdgeView) -> torch.Tensor:
        if view.honest is None or len(view.honest) == 0:
            return view.own
        own, honest, ref = (x.to(torch.float64) for x in (view.own, view.honest, view.reference))
        t = self.target(honest, ref)
        copy = honest[t] - ref
        sizes = torch.full((len(honest) + len(own),), float(self.num_samples))
        for c in GRID:
            sent = own + c * copy
            result = self._envelope(torch.cat([honest, sent]), sizes, ref)
            conflict = result.info.get("conflict")
            if conflict is None:  # without DP nothing is flagged
                break
            colluders = result.keep[len(honest):]
            if (not bool(result.keep[t]) and bool(colluders.all())) or (len(own) == 1 and bool(conflict[t, len(honest)])):
                return sent.to(view.own.dtype)
        return view.own
