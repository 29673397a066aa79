"""Where DP-SGD's randomness comes from: a secret source, or a seeded one for research.

A vehicle's Poisson batch draws and Gaussian noise must be secret: whoever can replay
them (an edge that knows the seed, as the first design allowed) subtracts the noise and
sees the clipped gradients, so ε is ∞ against it whatever the accountant reports.

- :class:`SecureGenerator`: every batch draw and every noise draw reads its own
  AES-256-CTR keystream under a key fresh from the operating system's CSPRNG
  (``os.urandom``) and never kept; no seed, key or public value determines them.
  Gaussians come from Box–Muller on 53-bit uniforms, each the sum of four draws
  halved (as Opacus's secure mode, against floating-point attacks on the low-order
  bits of a single draw). It is also a ``torch.Generator`` seeded from
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
from typing import Callable, Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class InsecureNoise(RuntimeError):
    """A service was handed a seeded (replayable) random source for DP training."""


class SecureGenerator(torch.Generator):
    """A random source no seed determines (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.manual_seed(int.from_bytes(os.urandom(8), "little"))


RandomSource = torch.Generator
"""A training random source: a :class:`SecureGenerator` or a seeded generator (insecure)."""


CHUNK = 1 << 13
"""Normals drawn per pass: the pass's arrays stay in the allocator's heap (larger ones are
mapped and faulted in afresh on every call, which cost more than the arithmetic)."""


def keystream(key: bytes, counter: bytes = bytes(16)) -> Callable[[int], bytes]:
    """A reader of the AES-256 counter-mode keystream (NIST SP 800-38A) under the 32-byte
    ``key`` from the 128-bit initial counter block ``counter``: each call returns the
    next ``count`` bytes."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    return lambda count: encryptor.update(bytes(count))


def _stream() -> Callable[[int], bytes]:
    """A secret byte stream: the keystream under a key read from ``os.urandom`` for this
    stream alone (a block cipher in counter mode is the generator of NIST SP 800-90A's
    CTR_DRBG; OpenSSL runs it on AES-NI, about 20× faster here than reading as many bytes
    from the operating system)."""
    return keystream(os.urandom(32))


def _to_uniform(raw: bytes) -> np.ndarray:
    """Uniforms in [0, 1) with 53 random bits each, 8 bytes apiece."""
    return (np.frombuffer(raw, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _uniform53(count: int) -> np.ndarray:
    """``count`` uniforms in [0, 1) with 53 secret random bits each."""
    return _to_uniform(_stream()(8 * count))


def _secure_normal(count: int) -> np.ndarray:
    """``count`` standard normals (float64): Box–Muller on 53-bit uniforms, four draws
    summed and halved, :data:`CHUNK` at a time from one secret stream. The radius
    √(−2 ln u₁) is taken in double precision; cos and sin of the angle 2πu₂ in single
    precision (several times faster here; their error is a few units in the last place
    of a float32, the precision in which the vehicle adds the noise)."""
    read, out = _stream(), np.empty(count)
    for start in range(0, count, CHUNK):
        m = min(CHUNK, count - start)
        pairs = math.ceil(m / 2)
        u = _to_uniform(read(64 * pairs)).reshape(4, 2, pairs)  # four draws of (u₁, u₂) pairs
        radius = np.sqrt(-2.0 * np.log(1.0 - u[:, 0]))  # 1 − u₁ in (0, 1]: log is finite
        angle = (2 * math.pi * u[:, 1]).astype(np.float32)
        draws = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        out[start : start + m] = draws.sum(axis=0)[:m] / 2.0
    return out


def gaussian(shape: torch.Size | tuple[int, ...], std: float, source: RandomSource) -> torch.Tensor:
    """N(0, std²) noise of ``shape`` (float32, CPU) from ``source``."""
    if isinstance(source, SecureGenerator):
        count = math.prod(shape)
        return torch.from_numpy(_secure_normal(count) * std).to(torch.float32).reshape(shape)
    return torch.normal(0.0, std, size=tuple(shape), generator=source)


def gaussians(shapes: Sequence[torch.Size], std: float, source: RandomSource) -> list[torch.Tensor]:
    """:func:`gaussian` noise for each of ``shapes`` (one step's parameters): from a secure
    source in one draw, split (a draw has a fixed cost); from a seeded one shape by shape,
    the stream :func:`gaussian` gives."""
    if not isinstance(source, SecureGenerator):
        return [gaussian(s, std, source) for s in shapes]
    flat = gaussian((sum(math.prod(s) for s in shapes),), std, source)
    return [part.reshape(s) for part, s in zip(flat.split([math.prod(s) for s in shapes]), shapes)]


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
