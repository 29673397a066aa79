"""A fixed wavelet-scattering front end with a linear classifier on top (after Mallat
2012 and Bruna & Mallat 2013; its use for DP-SGD after Tramèr & Boneh 2021).

The front end has no trainable parameters: its Morlet filters follow from the image
size alone and are kept as non-persistent buffers, so they are never part of a model
vector, an upload or a blob, and DP-SGD noise lands only on the classifier. Scattering
coefficients are stable to small deformations and make digits close to linearly
separable, so a private linear model on them learns in far fewer noisy steps than a
CNN trained end to end (docs/algorithms.md §1.4).

Coefficients of order 0, 1 and 2 at scales 2^0 and 2^1 (J = 2) and L = 8 orientations:
1 + J·L + L²·J(J−1)/2 = 81 channels, averaged by a Gaussian of width 0.8·2^J and
sampled every 2^J pixels (7 × 7 on 28 × 28 digits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bmfl.models import register_model


def _gabor(size: int, sigma: float, theta: float, xi: float, slant: float) -> torch.Tensor:
    """A complex Gabor filter on a ``size`` × ``size`` periodic grid centred on (0, 0):
    a Gaussian envelope of width σ along direction θ and σ/slant across it, times a
    plane wave of frequency ξ along θ; the envelope sums to 1."""
    c = torch.arange(size, dtype=torch.float64)
    c = torch.where(c < size / 2, c, c - size)  # distances to (0, 0) on the torus
    y, x = torch.meshgrid(c, c, indexing="ij")
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-(along**2 + (slant * across) ** 2) / (2 * sigma**2))
    envelope = envelope / envelope.sum()
    return envelope * torch.exp(1j * xi * along)


def _morlet(size: int, sigma: float, theta: float, xi: float, slant: float) -> torch.Tensor:
    """A Gabor filter less the multiple of its envelope that makes its mean zero (a
    band-pass wavelet: constant images give no response)."""
    wave = _gabor(size, sigma, theta, xi, slant)
    envelope = _gabor(size, sigma, theta, 0.0, slant)
    return wave - wave.sum() / envelope.sum() * envelope


def _fold(spectrum: torch.Tensor, k: int) -> torch.Tensor:
    """The spectrum of a signal kept every k-th sample in each axis, times k²: an N × N
    spectrum summed over its k × k blocks of size N/k (``ifft2`` of the result, over
    k², is the subsampled signal)."""
    n = spectrum.shape[-1] // k
    rows = sum(spectrum[..., a * n : (a + 1) * n, :] for a in range(k))
    return sum(rows[..., b * n : (b + 1) * n] for b in range(k))


class Scattering2D(nn.Module):
    """Scattering coefficients S0, S1, S2 of 1-channel square images (B, 1, n, n) →
    (B, 1 + 2L + L², n/4, n/4) for J = 2 and L orientations (81 channels for L = 8): S0 = x ⋆ φ, S1 = |x ⋆ ψ_{j,θ}| ⋆ φ and
    S2 = ||x ⋆ ψ_{0,θ}| ⋆ ψ_{1,θ'}| ⋆ φ, every 4th pixel. Computed by FFT on images
    padded by repeating its border, ``pad`` pixels on each side (28 + 2·2 = 32);
    a map made with a wavelet of scale 2^1 is kept at half resolution, and every
    subsampling is done in the Fourier domain (:func:`_fold`)."""

    def __init__(self, size: int = 28, orientations: int = 8, pad: int = 2) -> None:
        super().__init__()
        grid = size + 2 * pad
        if grid % 4 or pad % 2:
            raise ValueError("size + 2·pad must be a multiple of 4 and pad even")
        self.size, self.pad, self.orientations = size, pad, orientations
        slant = 4 / orientations
        psi = [
            _morlet(grid, 0.8 * 2**j, (orientations - 1 - k) * math.pi / orientations, 3 * math.pi / 4 / 2**j, slant)
            for j in range(2)
            for k in range(orientations)
        ]
        phi_hat = torch.fft.fft2(_gabor(grid, 0.8 * 4, 0.0, 0.0, 1.0))
        self.register_buffer("psi_hat", torch.fft.fft2(torch.stack(psi)).to(torch.complex64), persistent=False)
        self.register_buffer("phi_hat", phi_hat.to(torch.complex64), persistent=False)
        self.register_buffer("phi_hat_half", _fold(phi_hat, 2).to(torch.complex64), persistent=False)

    @property
    def channels(self) -> int:
        """1 + J·L + L²·J(J − 1)/2 for J = 2: 81 for L = 8."""
        return 1 + 2 * self.orientations + self.orientations**2

    def _average(self, u_hat: torch.Tensor, full: bool) -> torch.Tensor:
        """Low-pass the maps whose spectra are ``u_hat`` (at full or half resolution),
        keep every 4th pixel of the full grid, crop the padding."""
        k = 4 if full else 2
        s = torch.fft.ifft2(_fold(u_hat * (self.phi_hat if full else self.phi_hat_half), k)).real / k**2
        first = self.pad // 4 + (self.pad % 4 > 0)
        return s[..., first : first + self.size // 4, first : first + self.size // 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (1, self.size, self.size):
            raise ValueError(f"expected images of shape (1, {self.size}, {self.size}), got {tuple(x.shape[-3:])}")
        k = self.orientations
        x_hat = torch.fft.fft2(F.pad(x, [self.pad] * 4, mode="replicate")[:, 0]).unsqueeze(1)  # (B, 1, g, g)
        psi0, psi1 = self.psi_hat[:k], self.psi_hat[k:]
        u1_fine = torch.fft.ifft2(x_hat * psi0).abs()  # scale 2^0, full resolution
        u1_coarse = (torch.fft.ifft2(_fold(x_hat * psi1, 2)) / 4).abs()  # scale 2^1, half resolution
        u1_fine_hat = torch.fft.fft2(u1_fine)
        u2 = (torch.fft.ifft2(_fold(u1_fine_hat.unsqueeze(2) * psi1, 2)) / 4).abs().flatten(1, 2)  # (B, L², g/2, g/2)
        coarse_hat = torch.fft.fft2(torch.cat([u1_coarse, u2], dim=1))
        fine = self._average(torch.cat([x_hat, u1_fine_hat], dim=1), full=True)
        return torch.cat([fine, self._average(coarse_hat, full=False)], dim=1)


class ScatterLinear(nn.Module):
    """:class:`Scattering2D`, per-sample group normalisation without parameters (9 groups
    of 9 channels; each sample on its own, so per-sample clipping stays exact), then one
    ``nn.Linear``: 81·7·7·10 + 10 = 39,700 trainable parameters on 28 × 28 digits.

    ``forward`` takes raw images (B, 1, 28, 28) or their features (B, 81, 7, 7) from
    :meth:`fixed_features` (``bmfl.models.features`` maps a dataset once)."""

    front_description = "scattering J=2 L=8 pad=2 replicate, group_norm 9"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        if in_channels != 1:
            raise ValueError("scatter_linear takes 1-channel images")
        self.scatter = Scattering2D(size)
        self.feature_shape = (self.scatter.channels, size // 4, size // 4)
        self.fc = nn.Linear(math.prod(self.feature_shape), num_classes)

    def fixed_features(self, x: torch.Tensor) -> torch.Tensor:
        """The front end: no parameters, no state, the same for every copy of the model."""
        return F.group_norm(self.scatter(x), 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.feature_shape:
            x = self.fixed_features(x)
        return self.fc(x.flatten(1))


@register_model("scatter_linear")
def scatter_linear(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return ScatterLinear(in_channels, num_classes)
