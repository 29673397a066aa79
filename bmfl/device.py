"""The compute device, chosen once: ``cuda`` when available, else ``cpu``."""

from __future__ import annotations

import os
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def default_device() -> torch.device:
    """``BMFL_DEVICE`` if set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    forced = os.environ.get("BMFL_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
