"""An edge's part of a round (docs/architecture.md, "One round", step 4): build its rule
from the task, then filter and aggregate the uploads into the preliminary model w_ℓ
with one typed :class:`~bmfl.aggregation.Verdict` per upload.

Asynchronous mode (BAFDP, seed ``000``) plugs in here: :func:`aggregate_edge` takes
whatever uploads arrived, so an asynchronous edge calls it on each buffer of S reports,
with staleness weights applied to ``sizes``; the verdict types stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from bmfl.aggregation import Aggregator, Verdict, compose, get_aggregator
from bmfl.filters import Evaluator, get_filter
from bmfl.filters.base import FILTERS
from bmfl.task import AggregationSpec, RuleSpec

NOT_APPLICABLE = "rule_not_applicable"
"""Verdict reason when the rule cannot run on the kept uploads (too few for its trimming
or Krum's f, a non-finite reference after divergence): the edge records no model."""


def build_rule(rule: RuleSpec, filters: Sequence[RuleSpec], supplies: Mapping[str, Any]) -> Aggregator:
    """``rule`` behind ``filters`` (applied in order). Each filter receives the
    arguments it declares in ``needs`` from ``supplies`` (e.g. ``evaluate``); a filter
    whose needs the task cannot supply is refused with the reason."""
    built = []
    for f in filters:
        needs = getattr(FILTERS.factory(f.name), "needs", frozenset())
        missing = sorted(needs - supplies.keys())
        if missing:
            raise ValueError(
                f"filter {f.name!r} needs {', '.join(missing)}, which this task cannot supply "
                "(an accuracy evaluator needs a classification test set)"
            )
        overlap = sorted(needs & f.options.keys())
        if overlap:
            raise ValueError(f"filter {f.name!r}: {', '.join(overlap)} is supplied by the round, not an option")
        built.append(get_filter(f.name, **{k: supplies[k] for k in needs}, **f.options))
    return compose(get_aggregator(rule.name, **rule.options), *built)


def edge_rule(spec: AggregationSpec, evaluate: Evaluator | None) -> Aggregator:
    """The edge's filters and rule; ``evaluate`` is the test-set accuracy evaluator
    (None for a task that is not classification)."""
    return build_rule(spec.edge, spec.filters, {} if evaluate is None else {"evaluate": evaluate})


@dataclass(frozen=True)
class EdgeOutcome:
    """``preliminary``: w_ℓ, or None when there is nothing to record (no upload, none
    finite, or the rule not applicable); ``samples``: the data behind it (Σ n_m over
    unflagged uploads, 0 when every upload was flagged and w_ℓ = w^{r-1});
    ``verdicts``: vehicle → its verdict, for every vehicle given;
    ``user_level_epsilon``: the user-level ε a ``dp_fedavg`` rule reports after this
    round (None for other rules)."""

    preliminary: torch.Tensor | None
    samples: int
    verdicts: dict[int, Verdict]
    user_level_epsilon: float | None = None


def _user_level_epsilon(info: Mapping[str, Any]) -> float | None:
    """``user_level_epsilon`` from a rule's (possibly filter-nested) diagnostics."""
    if "user_level_epsilon" in info:
        return float(info["user_level_epsilon"])
    inner = info.get("rule")
    return _user_level_epsilon(inner) if isinstance(inner, Mapping) else None


def aggregate_edge(
    rule: Aggregator,
    uploads: Mapping[int, torch.Tensor],
    sizes: Mapping[int, int],
    reference: torch.Tensor,
    round_index: int,
    excluded: Mapping[int, str] | None = None,
) -> EdgeOutcome:
    """Filter and aggregate ``uploads`` (vehicle → flat w̃_m) against w^{r-1}
    (``reference``) in vehicle order, so the result does not depend on arrival order.
    ``sizes``: vehicle → n_m; ``excluded``: vehicles dropped before the rule, with the
    reason (they need no upload). Non-finite uploads are flagged ``non_finite``."""
    verdicts = {v: Verdict(0.0, True, reason) for v, reason in (excluded or {}).items()}
    for v in sorted(uploads):
        if v not in verdicts and not bool(torch.isfinite(uploads[v]).all()):
            verdicts[v] = Verdict(0.0, True, "non_finite")
    order = [v for v in sorted(uploads) if v not in verdicts]
    if not order:
        return EdgeOutcome(None, 0, verdicts)
    stacked = torch.stack([uploads[v] for v in order])
    n = torch.tensor([float(sizes[v]) for v in order], dtype=torch.float64)
    try:
        result = rule(stacked, n, reference, round_index=round_index)
    except ValueError:
        verdicts.update({v: Verdict(0.0, True, NOT_APPLICABLE) for v in order})
        return EdgeOutcome(None, 0, verdicts)
    verdicts.update(zip(order, result.verdicts))
    samples = sum(int(sizes[v]) for v in order if not verdicts[v].flagged)
    return EdgeOutcome(result.aggregate, samples, dict(sorted(verdicts.items())), _user_level_epsilon(result.info))
