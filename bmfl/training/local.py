"""Local training with differential privacy: BMFL Algorithm 1 (Eq. 9).

Per step, with a batch sampled by Poisson sampling at rate q = B/|O_m| (or, without DP
only, fixed-size shuffled batches):

1. per-sample gradients g_i, computed with ``torch.func`` (``vmap`` of ``grad``);
2. clipping ḡ_i = g_i / max(1, ‖g_i‖₂ / C), the norm over all parameters together;
3. ĝ = (Σ_i ḡ_i + N(0, σ²C² I)) / B, B the expected batch size;
4. momentum ĝ_t = ĝ + β ĝ_{t−1}, then w ← w − η ĝ_t.

Non-private training runs the same loop with σ = 0 and no clipping, so the batch
gradient Σ_i g_i / B is taken directly (one backward pass, no per-sample gradients).

``max_steps`` optionally caps the steps of one call (local iterations instead of full
epochs, so vehicles with much data do not drift, or cost, more than the rest).

DP randomness comes from ``bmfl.privacy.noise``: secret draws from a
``SecureGenerator`` (the services), or a seeded generator (the simulator's insecure,
reproducible option). :func:`refuse_unsound` refuses DP rounds the accountant cannot
state exactly. Nothing here accounts privacy: :func:`round_plan` says what a call will run and the
fleet path (``bmfl.training.fleet``), which calls :func:`train_local` only for models it
cannot stack, records the steps in the vehicle's ``bmfl.privacy.PrivacyEngine``.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from bmfl.data.base import TensorData
from bmfl.models.features import featurized
from bmfl.privacy.engine import PrivacyRefused, RoundPlan
from bmfl.privacy.noise import RandomSource, gaussians, poisson_mask
from bmfl.task import PAPER_TRAINING

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LocalTrainingConfig:
    """The training call's parameters (a task's ``bmfl.task.TrainingSpec.local()``).
    Defaults are the BMFL paper's setting, ``bmfl.task.PAPER_TRAINING`` (§V-B), where
    their values are stated."""

    epochs: int = PAPER_TRAINING.epochs
    batch_size: int = PAPER_TRAINING.batch_size
    lr: float = PAPER_TRAINING.lr
    momentum: float = PAPER_TRAINING.momentum
    dp: bool = PAPER_TRAINING.dp
    clip: float = PAPER_TRAINING.clip
    noise_multiplier: float = PAPER_TRAINING.noise_multiplier
    delta: float = PAPER_TRAINING.delta
    sampling: Literal["poisson", "fixed"] = PAPER_TRAINING.sampling
    maximize: bool = False  # gradient ascent on the loss (model-poisoning attacks)
    max_steps: int | None = None  # cap on the steps of one call (None: E full epochs)
    max_sampling_rate: float = 1.0  # cap on q (Poisson sampling): small datasets keep amplification by sampling

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.sampling not in ("poisson", "fixed"):
            raise ValueError("sampling must be 'poisson' or 'fixed'")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be positive (or None)")
        if self.dp and (self.clip <= 0 or self.noise_multiplier < 0):
            raise ValueError("DP needs clip > 0 and noise_multiplier ≥ 0")
        if not 0 < self.max_sampling_rate <= 1:
            raise ValueError("max_sampling_rate must be in (0, 1]")
        if self.max_sampling_rate < 1 and self.sampling != "poisson":
            raise ValueError("max_sampling_rate caps Poisson sampling; fixed-size batches have none")


@dataclass
class LocalTrainingResult:
    state: "OrderedDict[str, torch.Tensor]"
    steps: int
    sampling_rate: float
    mean_loss: float
    epsilon: float | None = None
    losses: list[float] = field(default_factory=list, repr=False)


def loss_function(data: TensorData, model: nn.Module | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Summed cross-entropy for classification, summed squared error for regression; a
    multi-task model's own loss (``task_loss``, over :func:`training_targets`)."""
    if hasattr(model, "task_loss"):
        return model.task_loss()
    if data.is_classification:
        return lambda out, y: F.cross_entropy(out, y, reduction="sum")
    return lambda out, y: F.mse_loss(out, y, reduction="sum")


def training_targets(data: TensorData, model: nn.Module) -> torch.Tensor:
    """``data.y``, or a multi-task model's target rows (``training_targets``)."""
    targets = getattr(model, "training_targets", None)
    return targets(data) if targets is not None else data.y


def begin_step(loss_sum: Callable, step: int) -> None:
    """Tell a loss with per-step state (random task weights) that step ``step`` begins."""
    hook = getattr(loss_sum, "begin_step", None)
    if hook is not None:
        hook(step)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_samples / batch_size))


def sampling_rate(config: LocalTrainingConfig, num_samples: int) -> float:
    """q = min(1, B/n, q_max): each sample's chance to be in a Poisson batch."""
    return min(1.0, config.batch_size / num_samples, config.max_sampling_rate)


def expected_batch(config: LocalTrainingConfig, num_samples: int) -> float:
    """q·n = min(B, n, q_max·n): the expected batch, the divisor of a DP-SGD step."""
    return min(config.batch_size, num_samples, config.max_sampling_rate * num_samples)


def _steps_per_epoch(config: LocalTrainingConfig, num_samples: int) -> int:
    """⌈n/B⌉, or ⌈1/q_max⌉ where the cap on q binds (an epoch is 1/q expected batches)."""
    per_epoch = steps_per_epoch(num_samples, config.batch_size)
    if config.max_sampling_rate < 1:
        per_epoch = max(per_epoch, math.ceil(round(1 / config.max_sampling_rate, 9)))
    return per_epoch


def round_plan(config: LocalTrainingConfig, num_samples: int) -> RoundPlan:
    """The steps :func:`train_local` takes on ``num_samples`` samples — E·⌈n/B⌉ (E·⌈1/q⌉
    where ``max_sampling_rate`` binds), capped by ``max_steps`` — at rate
    q = :func:`sampling_rate`, with σ (0 without DP)."""
    if num_samples < 1:
        raise ValueError("no training data")
    steps = config.epochs * _steps_per_epoch(config, num_samples)
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    sigma = config.noise_multiplier if config.dp else 0.0
    return RoundPlan(steps, sampling_rate(config, num_samples), sigma)


def refuse_unsound(config: LocalTrainingConfig, num_samples: int) -> None:
    """Raise ``bmfl.privacy.PrivacyRefused`` for a DP round whose ε cannot be stated
    exactly: fixed-size batches (``fixed_batches_with_dp``: the accountant covers
    Poisson sampling only, and we do not account them without amplification), or
    δ ≥ 1/n (``delta_too_large``: releasing one of n records whole is (0, 1/n)-DP, so
    such a δ promises nothing)."""
    if not config.dp:
        return
    if config.sampling != "poisson":
        raise PrivacyRefused("fixed_batches_with_dp", "DP training needs Poisson sampling; fixed-size batches are not accounted")
    if config.delta * num_samples >= 1:
        raise PrivacyRefused("delta_too_large", f"δ = {config.delta:g} ≥ 1/n for n = {num_samples} samples")


def _batches(n: int, config: LocalTrainingConfig, gen: RandomSource, device: torch.device):
    """Index batches for E epochs: Poisson-sampled (rate q) or shuffled fixed-size."""
    per_epoch = _steps_per_epoch(config, n)
    q = sampling_rate(config, n)
    for _ in range(config.epochs):
        if config.sampling == "poisson":
            for _ in range(per_epoch):
                yield poisson_mask(n, q, gen).to(device)
        else:
            perm = torch.randperm(n, generator=gen).to(device)
            yield from perm.split(config.batch_size)


def train_local(
    model: nn.Module,
    data: TensorData,
    config: LocalTrainingConfig,
    generator: RandomSource,
) -> LocalTrainingResult:
    """Train ``model`` in place on ``data`` for ``config.epochs`` epochs (Algorithm 1).

    ``generator`` drives batch sampling and DP noise: a ``bmfl.privacy.SecureGenerator``
    (secret draws), or a seeded CPU ``torch.Generator`` (equal seeds give equal
    results; insecure, for research runs). No privacy is accounted here (``epsilon`` is None):
    train through ``bmfl.training.fleet`` with the vehicle's engine for that.
    """
    if len(data) == 0:
        raise ValueError("no training data")
    data = featurized(model, data)
    device = next(model.parameters()).device
    x, y = data.x.to(device), training_targets(data, model).to(device)
    loss_sum = loss_function(data, model)
    sign = -1.0 if config.maximize else 1.0
    params: Tensors = {k: p.detach() for k, p in model.named_parameters()}
    buffers: Tensors = {k: b.detach() for k, b in model.named_buffers()}
    velocity: Tensors = {k: torch.zeros_like(p) for k, p in params.items()}
    divisor = expected_batch(config, len(data))

    def batch_loss(p: Tensors, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return sign * loss_sum(functional_call(model, (p, buffers), (xb,)), yb)

    def sample_loss(p: Tensors, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return batch_loss(p, xi.unsqueeze(0), yi.unsqueeze(0))

    batch_grad = grad(batch_loss)
    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    losses: list[float] = []
    steps = 0
    for idx in itertools.islice(_batches(len(data), config, generator, device), config.max_steps):
        begin_step(loss_sum, steps)
        steps += 1
        if len(idx) == 0:
            summed = {k: torch.zeros_like(p) for k, p in params.items()}
        elif config.dp:
            summed = _clipped_sum(per_sample_grads(params, x[idx], y[idx]), config.clip)
        else:
            summed = batch_grad(params, x[idx], y[idx])
        if config.dp and config.noise_multiplier > 0:
            noise = gaussians([g.shape for g in summed.values()], config.noise_multiplier * config.clip, generator)
            summed = {k: g + z.to(device) for (k, g), z in zip(summed.items(), noise)}
        for k, p in params.items():
            velocity[k] = summed[k] / divisor + config.momentum * velocity[k]
            params[k] = p - config.lr * velocity[k]
        if len(idx):
            with torch.no_grad():
                losses.append(float(batch_loss(params, x[idx], y[idx])) * sign / len(idx))
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    return LocalTrainingResult(
        state=OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items()),
        steps=steps,
        sampling_rate=sampling_rate(config, len(data)),
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
        losses=losses,
    )


def _clipped_sum(per_sample: Tensors, clip: float) -> Tensors:
    """Σ_i g_i / max(1, ‖g_i‖₂ / C), the norm taken over all parameters of sample i."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_sample.values()))
    factor = (clip / (norms + 1e-12)).clamp(max=1.0)
    return {k: torch.einsum("i,i...->...", factor, g) for k, g in per_sample.items()}
