"""The update-filter interface: decide, per upload, whether it enters aggregation.

A filter sees the (K, d) uploads, their data sizes, the reference vector w^{r-1} and the
1-based round index, and returns a :class:`FilterResult`: a boolean ``keep`` mask and
per-upload diagnostics. Filters compose with any aggregator through
``bmfl.aggregation.FilteredAggregator`` (filter first, then aggregate the kept uploads).
Filters are created by name (``get_filter("l2_norm", c1=40)``); register your own with
``@register_filter("name")`` on an :class:`UpdateFilter` subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from bmfl.registry import ParamsRepr, Registry


@dataclass
class FilterResult:
    """``keep``: (K,) bool; ``reliability``: (K,) Λ when the filter scores reliability
    (BMFL Eq. 11), recorded on chain per upload, and ``threshold`` the score to reach;
    ``updates``: (K, d) the uploads as the filter passes them on when it transforms
    them (norm clipping), None when it only selects; ``credit``: (K,) in [0, 1], the
    share of its weight each kept upload is granted (``bmfl.aggregation.filtered`` shrinks
    its delta to w^{r-1} by it before the rule and multiplies its θ by it; None: all 1);
    ``info``: diagnostics."""

    keep: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    reliability: torch.Tensor | None = None
    threshold: float | None = None
    updates: torch.Tensor | None = None
    credit: torch.Tensor | None = None


class UpdateFilter(ParamsRepr):
    """``needs`` names the constructor arguments the round core supplies from the task
    (``"evaluate"``: the test-set accuracy :data:`Evaluator`; classification only)."""

    name = "filter"
    needs: frozenset[str] = frozenset()

    def __call__(
        self, updates: torch.Tensor, sizes: torch.Tensor | None, reference: torch.Tensor, *, round_index: int = 1
    ) -> FilterResult:
        raise NotImplementedError



FILTERS: Registry[UpdateFilter] = Registry("filter")
register_filter = FILTERS.register
get_filter = FILTERS.create
available_filters = FILTERS.names
