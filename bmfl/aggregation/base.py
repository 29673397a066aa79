"""The aggregation interface shared by edges, cloud, simulator and benchmarks.

An aggregator receives the K uploaded models as flat float32 vectors stacked into a
``(K, d)`` tensor (``bmfl.params.flatten``), their data sizes ``(K,)`` and the
reference vector ``w^{r-1}`` (the global model the round started from), and returns an
:class:`AggregationResult`: the aggregate vector, one weight per upload (non-negative,
summing to 1 over the uploads that were used, 0 for the rest) and diagnostics.

Uploads are full model vectors w̃_m, as in the papers. Every shipped rule is
translation-equivariant (aggregating w̃_m or w̃_m − w^{r-1} and adding w^{r-1} back
gives the same result), so callers holding deltas may pass them with a zero reference.

Rules are created by name from one registry: ``get_aggregator("reweight", lam=2.0)``.
A user adds a rule with ``@register_aggregator("name")`` on an :class:`Aggregator`
subclass; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from bmfl.params import all_finite
from bmfl.registry import ParamsRepr, Registry


@dataclass(frozen=True)
class Verdict:
    """What the edge decided about one upload (docs/algorithms.md, "Verdicts").

    ``theta`` is its share θ of the aggregate; ``flagged`` means it contributes nothing
    (θ = 0), and ``reason`` says why: ``filter:<name>`` (rejected by that filter, the
    chain records it as malicious), ``rule:<name>`` (left out by the rule itself, e.g.
    Krum) or ``non_finite``. ``reliability`` is Λ (BMFL Eq. 11) when a reliability filter
    scored the upload, else None; ``threshold`` the score it had to reach (T_Λ) when the
    filter reports one."""

    theta: float
    flagged: bool = False
    reason: str | None = None
    reliability: float | None = None
    threshold: float | None = None

    @property
    def kept(self) -> bool:
        """The upload entered the aggregate."""
        return not self.flagged


@dataclass
class AggregationResult:
    """``weights[m]`` is update m's share of the aggregate (coordinate-wise rules: its
    average share over coordinates); ``verdicts[m]`` the typed decision about upload m;
    ``info`` holds rule-specific diagnostics."""

    aggregate: torch.Tensor
    weights: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)

    def with_rule_verdicts(self, rule: str) -> "AggregationResult":
        """Fill ``verdicts`` from the weights (an upload with weight 0 was left out by
        ``rule``) unless a wrapper already set them."""
        if not self.verdicts:
            self.verdicts = [
                Verdict(w, w == 0.0, f"rule:{rule}" if w == 0.0 else None) for w in self.weights.tolist()
            ]
        return self


def check_inputs(updates: torch.Tensor, sizes: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
    """Validate shapes and values; returns the sizes as float64 (ones when ``None``)."""
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty (K, d) tensor, got shape {tuple(updates.shape)}")
    if reference.shape != updates.shape[1:]:
        raise ValueError(f"reference has shape {tuple(reference.shape)}, expected ({updates.shape[1]},)")
    if not all_finite(updates) or not all_finite(reference):
        raise ValueError("updates and reference must be finite")
    k = updates.shape[0]
    sizes = torch.ones(k, dtype=torch.float64) if sizes is None else torch.as_tensor(sizes, dtype=torch.float64)
    if sizes.shape != (k,) or bool((sizes < 0).any()):
        raise ValueError(f"sizes must be {k} non-negative numbers")
    return sizes


class Aggregator(ParamsRepr):
    """Base class: subclasses implement :meth:`aggregate` on validated inputs.

    ``round_index`` (1-based) is accepted by every aggregator so callers never need to
    know whether a filter is wrapped around the rule (the self-reliability filter,
    BMFL Eq. 11, uses it); plain rules ignore it.
    """

    name = "aggregator"

    def __call__(
        self,
        updates: torch.Tensor,
        sizes: torch.Tensor | None,
        reference: torch.Tensor,
        *,
        round_index: int = 1,
    ) -> AggregationResult:
        sizes = check_inputs(updates, sizes, reference)
        result = self.aggregate(updates.to(torch.float32), sizes, reference.to(torch.float32))
        return result.with_rule_verdicts(self.name)

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        raise NotImplementedError



AGGREGATORS: Registry[Aggregator] = Registry("aggregator")
register_aggregator = AGGREGATORS.register
get_aggregator = AGGREGATORS.create
available_aggregators = AGGREGATORS.names
