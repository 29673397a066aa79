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
from typing import Any, Callable

import torch


@dataclass
class FilterResult:
    keep: torch.Tensor  # (K,) bool
    info: dict[str, Any] = field(default_factory=dict)


class UpdateFilter:
    name = "filter"

    def __call__(
        self, updates: torch.Tensor, sizes: torch.Tensor | None, reference: torch.Tensor, *, round_index: int = 1
    ) -> FilterResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


_REGISTRY: dict[str, Callable[..., UpdateFilter]] = {}


def register_filter(name: str) -> Callable[[type[UpdateFilter]], type[UpdateFilter]]:
    def add(cls: type[UpdateFilter]) -> type[UpdateFilter]:
        if name in _REGISTRY:
            raise ValueError(f"filter {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def get_filter(name: str, **params: Any) -> UpdateFilter:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown filter {name!r}; known: {', '.join(available_filters())}") from None
    return factory(**params)


def available_filters() -> list[str]:
    return sorted(_REGISTRY)
