"""The compute device, chosen once for a process (or for a block, :func:`using`): ``cuda``
when available, else ``cpu``.

Tensors pass between modules (uploads, w^{r-1}, weights, verdicts) on the CPU; the work
that pays off on an accelerator moves there inside its module and returns its results
to the CPU: the vehicles' training (``bmfl.training.fleet``), the edges' scoring
(``bmfl.filters.self_reliability``, ``bmfl.training.evaluate``) and the residual
reweighting (``bmfl.aggregation.reweight``). Random draws stay on CPU generators and
their values move, so a seed gives the same draws on every device. On a GPU, float32
matrix products and convolutions keep full precision (TF32 off), so an edge's verdicts
do not depend on the device it runs on.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import torch

_chosen: list[torch.device] = []


@lru_cache(maxsize=1)
def _detected() -> torch.device:
    forced = os.environ.get("BMFL_DEVICE")
    if forced:
        return _full_precision(torch.device(forced))
    return _full_precision(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _full_precision(device: torch.device) -> torch.device:
    """Turn TF32 off where ``device`` is a GPU (cuDNN's convolutions default to it)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def default_device() -> torch.device:
    """The device of :func:`using` where one is active, else ``BMFL_DEVICE`` if set,
    else ``cuda`` when a GPU is visible, else ``cpu``."""
    return _chosen[-1] if _chosen else _detected()


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device: ``cpu``, ``cuda`` or ``cuda:N``, the latter only
    where torch sees a GPU; ValueError with the reason otherwise."""
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"{device!r}: {exc}") from None
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"{device!r}: use cpu, cuda or cuda:N")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("cuda asked for, but torch sees no GPU")
    return chosen


@contextmanager
def using(device: str | torch.device) -> Iterator[torch.device]:
    """Make ``device`` (:func:`parse_device`) the default device inside the block
    (``bmfl simulate --device``)."""
    chosen = parse_device(device)
    _chosen.append(_full_precision(chosen))
    try:
        yield chosen
    finally:
        _chosen.pop()
