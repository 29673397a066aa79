"""Model registry: every model the platform trains is created by name.

>>> model = create_model("bmfl_cnn")
>>> count_parameters(model)
21840
"""

from __future__ import annotations

import torch
from torch import nn

from bmfl.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register_model = MODELS.register
available_models = MODELS.names


def create_model(name: str, device: torch.device | str | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` (keyword arguments go to its factory)."""
    model = MODELS.create(name, **kwargs)
    return model.to(device) if device is not None else model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


from bmfl.models import cnn, lstm, mlp, multitask, scatter  # noqa: E402,F401  (registration side effects)
