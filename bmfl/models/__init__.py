"""Model registry: every model the platform trains is created by name.

>>> model = create_model("bmfl_cnn")
>>> count_parameters(model)
21840
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a model factory under ``name`` (users may register their own)."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def create_model(name: str, device: torch.device | str | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` (keyword arguments go to its factory)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(available_models())}") from None
    model = factory(**kwargs)
    return model.to(device) if device is not None else model


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


from bmfl.models import cnn, lstm, mlp  # noqa: E402,F401  (registration side effects)
