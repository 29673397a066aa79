"""Where DP-SGD's randomness comes from: a secret source, or a seeded one for research.

A vehicle's Poisson batch draws and Gaussian noise must be secret: whoever can replay
them (an edge that knows the seed, as the first design allowed) subtracts the noise and
sees the clipped gradients, so ε is ∞ against it whatever the accountant reports.

- :class:`SecureGenerator`: every batch draw and every noise draw reads fresh bytes
  from the operating system's CSPRNG (``os.urandom``); no seed, key or public value
  determines them. Gaussians come from Box–Muller on 53-bit uniforms, each the sum of
  four draws halved (as Opacus's secure mode, against floating-point attacks on the
  low-order bits of a single draw). It is also a ``torch.Generator`` seeded from
  ``os.urandom``, so code that only needs *a* generator (attack behaviours) works with
  it unchanged.
- a plain, seeded ``torch.Generator``: reproducible and **insecure** (Mersenne
  Twister, replayable from its seed). Only the simulator uses it, and only under its
  labelled option ``insecure_reproducible_noise``; the vehicle client never does
  (:func:`require_secure`).

Draws are made on the CPU and moved to the parameters' device by the caller.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch


class InsecureNoise(RuntimeError):
    """A service was handed a seeded (replayable) random source for DP training."""


class SecureGenerator(torch.Generator):
    """A random source no seed determines (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.manual_seed(int.from_bytes(os.urandom(8), "little"))


RandomSource = torch.Generator
"""A training random source: a :class:`SecureGenerator` or a seeded generator (insecure)."""


def _uniform53(count: int) -> np.ndarray:
    """``count`` uniforms in [0, 1) with 53 random bits each, from ``os.urandom``."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _secure_normal(count: int) -> np.ndarray:
    """``count`` standard normals (float64): Box–Muller, four draws summed and halved."""
    pairs = math.ceil(count / 2)
    total = np.zeros(2 * pairs)
    for _ in range(4):
        u1, u2 = 1.0 - _uniform53(pairs), _uniform53(pairs)  # u1 in (0, 1]: log is finite
        radius = np.sqrt(-2.0 * np.log(u1))
        total += np.concatenate([radius * np.cos(2 * math.pi * u2), radius * np.sin(2 * math.pi * u2)])
    return total[:count] / 2.0


def gaussian(shape: torch.Size | tuple[int, ...], std: float, source: RandomSource) -> torch.Tensor:
    """N(0, std²) noise of ``shape`` (float32, CPU) from ``source``."""
    if isinstance(source, SecureGenerator):
        count = math.prod(shape)
        return torch.from_numpy(_secure_normal(count) * std).to(torch.float32).reshape(shape)
    return torch.normal(0.0, std, size=tuple(shape), generator=source)


def poisson_mask(n: int, rate: float, source: RandomSource) -> torch.Tensor:
    """Indices of a Poisson sample of ``n`` items, each kept with probability ``rate``."""
    if isinstance(source, SecureGenerator):
        return torch.from_numpy(np.flatnonzero(_uniform53(n) < rate)).to(torch.long)
    return torch.nonzero(torch.rand(n, generator=source) < rate).flatten()


def require_secure(source: RandomSource) -> None:
    """Raise :class:`InsecureNoise` unless ``source`` is a :class:`SecureGenerator`."""
    if not isinstance(source, SecureGenerator):
        raise InsecureNoise(
            "DP training in a service needs a SecureGenerator: a seeded generator lets anyone who knows the seed "
            "replay the noise (insecure_reproducible_noise is a simulator option only)"
        )
