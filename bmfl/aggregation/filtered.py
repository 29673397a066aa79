"""Filters composed with rules: the filter runs first, the rule aggregates the kept
uploads (BMFL §IV-C: self-reliability filter, then attack-resistant aggregation).

Rejected uploads get weight 0 and a flagged :class:`Verdict` naming the filter (the
chain records them as malicious). A filter that grants kept uploads only part of their
weight (``FilterResult.credit``, leave-out testing's credit for measured help) has each
delta to w^{r-1} shrunk by its share before the rule and its θ multiplied by it: the
edge's step moves by the granted share only, and the rest of the weight stays with
w^{r-1}, unpaid. A filter that transforms uploads (norm clipping)
passes them on in ``FilterResult.updates``; the rule aggregates those. If no upload is kept, the aggregate is the reference
w^{r-1} unchanged and every weight is 0.
Wrappers nest, so several filters chain: ``compose(rule, f1, f2)`` runs f1, then f2 on
what f1 kept, then the rule.

``scales`` (asynchronous rounds: the staleness weights s(τ)) shrink each upload's delta
to w^{r-1} *after* the filters and before the rule, so a filter judges what a vehicle
actually sent (a stale honest delta scaled down would fall below its own DP noise)
while the rule aggregates the weighted deltas (:func:`aggregate_scaled`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, Verdict, check_inputs
from bmfl.filters.base import UpdateFilter
from bmfl.filters.gram import carry_gram


class FilteredAggregator(Aggregator):
    def __init__(self, filter: UpdateFilter, inner: Aggregator) -> None:
        self.filter = filter
        self.inner = inner
        self.name = f"{filter.name}+{inner.name}"

    def __call__(self, updates, sizes, reference, *, round_index: int = 1, scales=None) -> AggregationResult:
        sizes = check_inputs(updates, sizes, reference)
        updates, reference = updates.to(torch.float32), reference.to(torch.float32)
        verdict = self.filter(updates, sizes, reference, round_index=round_index)
        passed_on = verdict.updates is None and verdict.credit is None
        if verdict.updates is not None:
            updates = verdict.updates.to(torch.float32)
        credit = None if verdict.credit is None else verdict.credit.to(torch.float64)
        if credit is not None:  # each kept upload enters the rule with its granted share of its delta
            updates = rescale(updates, reference, credit)
        keep = verdict.keep.to(torch.bool)
        kept = torch.nonzero(keep).flatten()
        weights = torch.zeros(updates.shape[0], dtype=torch.float64)
        info = {"filter": verdict.info, "keep": keep}
        scores = verdict.reliability.tolist() if verdict.reliability is not None else [None] * len(keep)
        verdicts = [Verdict(0.0, True, f"filter:{self.filter.name}", s, verdict.threshold) for s in scores]
        if len(kept) == 0:
            return AggregationResult(reference.clone(), weights, info, verdicts)
        subset = updates[kept]
        if passed_on:
            carry_gram(updates, subset, kept, reference)  # the next filter reads its Gram matrix, not the uploads
        inner = aggregate_scaled(
            self.inner, subset, sizes[kept], reference, round_index=round_index,
            scales=None if scales is None else scales[kept],
        )  # fmt: skip
        weights[kept] = inner.weights.to(torch.float64) * (1.0 if credit is None else credit[kept])
        info["rule"] = inner.info
        for i, v in zip(kept.tolist(), inner.verdicts):
            if credit is not None:
                v = replace(v, theta=v.theta * float(credit[i]))
            if v.reliability is None and scores[i] is not None:
                v = replace(v, reliability=scores[i], threshold=verdict.threshold)
            verdicts[i] = v
        return AggregationResult(inner.aggregate, weights, info, verdicts)


def rescale(updates: torch.Tensor, reference: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Rows ``reference + s·(u − reference)``; a row with s = 1 is returned bit for bit."""
    if scales is None or bool((scales == 1).all()):
        return updates
    out = updates.clone()
    rows = scales != 1
    out[rows] = reference + scales[rows, None].to(updates.dtype) * (updates[rows] - reference)
    return out


def aggregate_scaled(
    rule: Aggregator, updates, sizes, reference, *, round_index: int = 1, scales: torch.Tensor | None = None
) -> AggregationResult:
    """``rule`` over ``updates`` whose filters see them as given and whose aggregation
    rule sees them :func:`rescale`-d by ``scales`` (None: no scaling)."""
    if isinstance(rule, FilteredAggregator):
        return rule(updates, sizes, reference, round_index=round_index, scales=scales)
    return rule(rescale(updates, reference, scales), sizes, reference, round_index=round_index)


def compose(rule: Aggregator, *filters: UpdateFilter) -> Aggregator:
    """``rule`` behind ``filters``, applied in the order given."""
    for f in reversed(filters):
        rule = FilteredAggregator(f, rule)
    return rule
