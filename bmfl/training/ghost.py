"""Clipped per-sample gradient sums without per-sample gradients (ghost clipping with
book-keeping, after Goodfellow 2015, Li et al. 2022 and Bu et al. 2023).

For a layer y = a Wᵀ (+ b) — ``nn.Linear``, or a convolution read as one on the
unfolded input — sample i's weight gradient is G_i = Σ_t δ_{i,t} a_{i,t}ᵀ, with a_i the
layer's input (T positions × K features) and δ_i = ∂loss_i/∂y_i its output gradient.
One backward pass of the summed loss gives every δ_i (samples do not interact), and
from (a_i, δ_i) the layer's part of ‖g_i‖²:

- one position (T = 1): ‖G_i‖² = ‖a_i‖² ‖δ_i‖²;
- few positions (T·(K + O) < O·K): ‖G_i‖² = ⟨a_i a_iᵀ, δ_i δ_iᵀ⟩ (T × T Gram matrices);
- otherwise from G_i itself, then the cheaper product (mixed clipping).

The clip factors c_i = min(1, C/‖g_i‖) then give the clipped sum of each layer
directly (book-keeping: Σ_i c_i G_i = Σ_{i,t} c_i δ_{i,t} a_{i,t}ᵀ, no second backward).
The result equals ``bmfl.training.local._clipped_sum`` of the per-sample gradients up
to float summation order. Only models whose every parameter is the weight or bias of
a ``Linear``, ``Conv1d`` or ``Conv2d`` (zero padding, one group) that runs once per
forward qualify (:func:`supports`); the training path checks the result against the
per-sample path on a probe batch before using it, and keeps that path otherwise.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

Tensors = dict[str, torch.Tensor]
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYERS)}


def supports(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is a weight or bias of a supported layer."""
    owned = set()
    for name, m in _layers(model).items():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        owned.update(f"{name}.{k}" if name else k for k, _ in m.named_parameters(recurse=False))
    return bool(owned) and owned == {k for k, _ in model.named_parameters()}


def _columns(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """A convolution's input unfolded to (B, C·k…, T) (``F.unfold``'s layout), as one
    copy of a strided view (on CPU several times faster than ``F.unfold``'s im2col)."""
    spatial = a.dim() - 2
    if any(m.padding):
        a = F.pad(a, [p for p in reversed(m.padding) for _ in (0, 1)])
    for s, (k, stride, dilation) in enumerate(zip(m.kernel_size, m.stride, m.dilation)):
        a = a.unfold(2 + s, dilation * (k - 1) + 1, stride)
        if dilation > 1:
            a = a[(slice(None),) * (a.dim() - 1) + (slice(None, None, dilation),)]
    order = [0, 1, *range(2 + spatial, 2 + 2 * spatial), *range(2, 2 + spatial)]
    a = a.permute(order)
    return a.reshape(a.shape[0], -1, math.prod(a.shape[2 + spatial :]))


def _operands(m: nn.Module, a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's input and output gradient as (B, K, T) and (B, O, T)."""
    if isinstance(m, nn.Linear):
        return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2), d.reshape(d.shape[0], -1, d.shape[-1]).transpose(1, 2)
    return _columns(m, a), d.flatten(2)


def _norms2(a: torch.Tensor, d: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sample's squared gradient norm over the layer's weight and bias, and the
    per-sample weight gradients (B, O, K) when they are the cheaper way there (a T × T
    Gram matrix costs T²·(K + O) per sample, G_i costs T·O·K)."""
    k, positions, o = a.shape[1], a.shape[2], d.shape[1]
    samples = None
    if positions == 1:
        n2 = a.pow(2).sum((1, 2)) * d.pow(2).sum((1, 2))
    elif positions * (k + o) < o * k:
        gram_a, gram_d = torch.bmm(a.transpose(1, 2), a), torch.bmm(d.transpose(1, 2), d)
        n2 = (gram_a * gram_d).sum((1, 2))
    else:
        samples = torch.bmm(d, a.transpose(1, 2))
        n2 = samples.pow(2).sum((1, 2))
    if bias:
        n2 = n2 + d.sum(2).pow(2).sum(1)
    return n2, samples


def clipped_sum(model: nn.Module, loss_sum: Callable, sign: float, *, stacked: bool = False) -> Callable:
    """(params, x (B, …), y (B, …), mask (B,), clip) → Σ_i m_i c_i g_i for one vehicle,
    c_i = min(1, C/‖g_i‖) as ``bmfl.training.local._clipped_sum`` (m: 0 for padding).
    ``stacked``: written with ``torch.func`` (zero probes added to the layer outputs),
    to run under ``vmap`` over vehicles; otherwise one plain autograd pass, cheaper for
    one vehicle. ``model`` must pass :func:`supports`."""
    work = copy.deepcopy(model)  # hooks on a private copy: other users of ``model`` are untouched
    layers = _layers(work)
    shapes: dict[tuple, dict[str, torch.Size]] = {}
    call: dict = {}  # the running forward's probes, and the inputs and outputs it records

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            if name in call["inputs"]:
                raise RuntimeError(f"layer {name} runs twice in one forward")
            call["inputs"][name] = args[0]
            out = out if call["probes"] is None else out + call["probes"][name]
            call["outputs"][name] = out
            return out

        return record

    for n, m in layers.items():
        m.register_forward_hook(hook(n))

    def forward(p: Tensors, xb: torch.Tensor, yb: torch.Tensor, probes: Tensors | None, outputs: dict):
        call.update(probes=probes, inputs={}, outputs=outputs)
        try:
            loss = sign * loss_sum(functional_call(work, p, (xb,)), yb)
            return loss, call["inputs"]
        finally:
            call.clear()

    def with_probes(p: Tensors, xb: torch.Tensor, yb: torch.Tensor) -> tuple[Tensors, Tensors]:
        key = tuple(xb.shape[1:])
        if key not in shapes:
            outputs: dict = {}
            with torch.no_grad():
                forward(p, xb[:1], yb[:1], None, outputs)
            shapes[key] = {n: o.shape[1:] for n, o in outputs.items()}
        probes = {n: xb.new_zeros(xb.shape[0], *s) for n, s in shapes[key].items()}
        return grad(lambda z: forward(p, xb, yb, z, {}), has_aux=True)(probes)

    def with_autograd(p: Tensors, xb: torch.Tensor, yb: torch.Tensor) -> tuple[Tensors, Tensors]:
        leaves = {k: v.detach().requires_grad_() for k, v in p.items()}
        outputs: dict = {}
        with torch.enable_grad():
            loss, inputs = forward(leaves, xb, yb, None, outputs)
            deltas = torch.autograd.grad(loss, [outputs[n] for n in layers])
        return dict(zip(layers, deltas)), {n: a.detach() for n, a in inputs.items()}

    output_grads = with_probes if stacked else with_autograd

    def run(p: Tensors, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip: float) -> Tensors:
        deltas, inputs = output_grads(p, xb, yb)
        parts = {n: _operands(layers[n], inputs[n], deltas[n]) for n in layers}
        norms = {n: _norms2(a, d, layers[n].bias is not None) for n, (a, d) in parts.items()}
        total = torch.sqrt(sum(n2 for n2, _ in norms.values()))
        factor = (clip / (total + 1e-12)).clamp(max=1.0) * mask
        out: Tensors = {}
        for n, m in layers.items():
            (a, d), samples = parts[n], norms[n][1]
            if samples is not None:
                weight = torch.einsum("b,bok->ok", factor, samples)
            else:
                weight = torch.einsum("bot,bkt->ok", d * factor.view(-1, 1, 1), a)
            prefix = f"{n}." if n else ""
            out[prefix + "weight"] = weight.reshape(m.weight.shape)
            if m.bias is not None:
                out[prefix + "bias"] = factor @ d.sum(2)
        return {k: out[k] for k in p}

    return run
