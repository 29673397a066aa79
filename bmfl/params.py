"""Model parameters as flat vectors: what aggregators, filters and attacks operate on.

A model state is an ordered ``dict[str, Tensor]`` (``model.state_dict()`` order); its
flat view concatenates every tensor in that order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

State = Mapping[str, torch.Tensor]


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of a floating-point tensor is finite: its minimum and maximum
    in one pass (NaN propagates into both), without the bool tensor ``isfinite`` builds
    (15× faster on 10 × 11 M values)."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def get_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """A detached copy of the model's state."""
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def flatten(state: State) -> torch.Tensor:
    """Concatenate every tensor of ``state`` (float32) into one 1-D vector."""
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in state.values()])


def unflatten(vector: torch.Tensor, like: State) -> "OrderedDict[str, torch.Tensor]":
    """Inverse of :func:`flatten`: shapes, dtypes and names taken from ``like``."""
    expected = sum(t.numel() for t in like.values())
    if vector.dim() != 1 or vector.numel() != expected:
        raise ValueError(f"vector has shape {tuple(vector.shape)}, expected ({expected},)")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    offset = 0
    for name, ref in like.items():
        n = ref.numel()
        out[name] = vector[offset : offset + n].reshape(ref.shape).to(ref.dtype).clone()
        offset += n
    return out


def load_vector(model: nn.Module, vector: torch.Tensor) -> nn.Module:
    """Write a flat parameter vector into ``model`` in place; returns the model."""
    model.load_state_dict(unflatten(vector.to(next(model.parameters()).device), model.state_dict()))
    return model
