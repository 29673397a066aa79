"""Local DP on inputs (BAFDP, seed ``000``: each client perturbs its own data with
Gaussian noise before it trains), a privacy option next to DP-SGD.

Once, before its first round, a vehicle clips every sample's feature vector x (with
``targets``, the vector (x, y): regression only) to L2 norm ≤ C_x,
x̄ = x · min(1, C_x/‖x‖), and releases x̃ = x̄ + N(0, σ_x² C_x² I). The noise is drawn
once per sample and kept: training every round on the same x̃ spends nothing more,
where re-drawing it per epoch would be a new release each time.

Privacy unit and relation: one sample, *zero-out* neighbouring (dp-accounting's
``REPLACE_SPECIAL``: one sample replaced by a null sample whose vector is 0 and whose
DP-SGD gradient is 0). The sensitivity of a sample's release is then ‖x̄ − 0‖ ≤ C_x,
so the release is the Gaussian mechanism with noise multiplier σ_x, whose ε at δ comes
from the vehicle's accountant as one Gaussian step (sampling rate 1, noise multiplier
σ_x). Under the same relation DP-SGD's Poisson-subsampled Gaussian has the curve the
accountant already uses, so a vehicle with both options composes the two (the RDP
curves add; PLDs convolve) and reports one ε. A zero-out guarantee (ε, δ) implies
(2ε, 2δ)-style group bounds for replace-one (a replacement is two zero-outs).

What it does not protect: without ``targets`` the labels are released as they are, so
ε stays ∞ unless DP-SGD trains (``PrivacyEngine.release_inputs``). In sliding-window
data (traffic) one measurement appears in several samples, so its protection is
that of a group of that many samples.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from bmfl.data.base import TensorData
from bmfl.privacy.noise import RandomSource, gaussian


def clip_rows(x: torch.Tensor, clip: float) -> torch.Tensor:
    """Each row of ``x`` (flattened) scaled to L2 norm ≤ ``clip``."""
    flat = x.reshape(len(x), -1).to(torch.float32)
    norms = flat.norm(dim=1, keepdim=True)
    return (flat * torch.clamp(clip / norms.clamp_min(1e-12), max=1.0)).reshape(x.shape)


def perturb(x: torch.Tensor, clip: float, sigma: float, source: RandomSource) -> torch.Tensor:
    """x̃ = clip_rows(x, C_x) + N(0, σ_x² C_x²), noise from ``source`` (module docstring)."""
    if clip <= 0 or sigma <= 0:
        raise ValueError("input DP needs clip > 0 and sigma > 0")
    return clip_rows(x, clip) + gaussian(tuple(x.shape), sigma * clip, source)


def privatise(data: TensorData, clip: float, sigma: float, targets: bool, source: RandomSource) -> TensorData:
    """``data`` with its feature vectors released by :func:`perturb`; with ``targets``
    the vector is (x, y) (regression only), clipped and perturbed together."""
    if not targets:
        return replace(data, x=perturb(data.x, clip, sigma, source))
    if data.is_classification:
        raise ValueError("input_dp.targets perturbs real-valued targets; this task's targets are class labels")
    x = data.x.reshape(len(data), -1).to(torch.float32)
    y = data.y.reshape(len(data), -1).to(torch.float32)
    joint = perturb(torch.cat([x, y], dim=1), clip, sigma, source)
    return replace(data, x=joint[:, : x.shape[1]].reshape(data.x.shape), y=joint[:, x.shape[1] :].reshape(data.y.shape))
