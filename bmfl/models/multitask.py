"""Hard-parameter-sharing multi-task 1D-CNN (FedAuxHMTL, seed ``002``): one shared
backbone over a flow's per-packet features, a head for the main classification task and
one head per auxiliary task.

``aux_heads`` lists the auxiliary heads by output width: 1 is a regression head
(squared error), k ≥ 2 a classification head over k classes (cross-entropy). With no
auxiliary heads the model is the single-task baseline (FedAvg in the paper).

In training mode ``forward`` returns ``[main logits | aux outputs]`` (B, C + Σ widths);
in eval mode only the main logits (B, C), so every evaluator, scorer and filter sees a
plain classifier. The parameter vector holds backbone and heads together; aggregation
rules and filters treat it as one vector (heads are not aggregated separately).

The training loss (:meth:`MultiTaskCNN1D.task_loss`) is λ₀·CE(main) + Σₐ λₐ·ℓₐ, with
the weighting strategies:

- ``fixed``: λ₀ = 1 and λₐ = ``aux_weights[a]``;
- ``uniform``: every λ = 1;
- ``random`` (random loss weighting, as FedAuxHMTL): λ = (1 + A)·softmax(z), z ~ N(0, I)
  over all 1 + A tasks, drawn afresh at every local step from a stream keyed by
  (``weight_seed``, step index), so vehicles stacked in one fleet step and a vehicle
  training alone draw the same weights.

DP-SGD clips each sample's gradient of this whole weighted loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bmfl.data.base import TensorData
from bmfl.models import register_model

WEIGHTINGS = ("fixed", "uniform", "random")


class MultiTaskLoss:
    """Summed multi-task loss of (outputs, targets). Targets are (B, 1 + A) rows
    ``[class, aux₁, …]`` (a classification aux target as its class index in float); a
    NaN auxiliary target (data without auxiliary targets) adds nothing for that sample."""

    def __init__(self, num_classes: int, aux_heads: Sequence[int], weighting: str, aux_weights: Sequence[float], seed: int) -> None:
        self.num_classes = num_classes
        self.aux_heads = tuple(aux_heads)
        self.weighting = weighting
        self.seed = seed
        fixed = [1.0, *aux_weights] if weighting == "fixed" else [1.0] * (1 + len(self.aux_heads))
        self.weights = torch.tensor(fixed)

    def begin_step(self, step: int) -> None:
        """Draw the random weights of local step ``step`` (other strategies: nothing)."""
        if self.weighting == "random":
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            z = torch.randn(1 + len(self.aux_heads), generator=gen)
            self.weights = (1 + len(self.aux_heads)) * torch.softmax(z, 0)

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(out.device)
        loss = w[0] * F.cross_entropy(out[:, : self.num_classes], y[:, 0].long(), reduction="sum")
        start = self.num_classes
        for a, width in enumerate(self.aux_heads):
            pred, target = out[:, start : start + width], y[:, 1 + a]
            known = ~torch.isnan(target)
            target = torch.where(known, target, torch.zeros_like(target))  # NaN-free gradients
            if width == 1:
                each = (pred[:, 0] - target).pow(2)
            else:
                each = F.cross_entropy(pred, target.long(), reduction="none")
            loss = loss + w[1 + a] * (each * known).sum()
            start += width
        return loss


class MultiTaskCNN1D(nn.Module):
    """conv1d in→16 k5, pool 2, conv1d 16→32 k5, pool 2, fc → 64 (shared backbone);
    linear heads 64 → C (main) and 64 → width (each auxiliary). Stateless (no dropout,
    no batch norm), so per-sample gradients and fleet stacking apply."""

    def __init__(
        self,
        in_channels: int = 2,
        length: int = 32,
        num_classes: int = 5,
        aux_heads: Sequence[int] = (1, 1),
        weighting: str = "random",
        aux_weights: Sequence[float] | None = None,
        weight_seed: int = 0,
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if any(int(w) < 1 for w in aux_heads):
            raise ValueError("auxiliary head widths must be positive")
        aux_weights = list(aux_weights) if aux_weights is not None else [1.0] * len(aux_heads)
        if len(aux_weights) != len(aux_heads):
            raise ValueError("need one fixed weight per auxiliary head")
        if length % 4:
            raise ValueError("length must be a multiple of 4")
        self.num_classes = num_classes
        self.aux_heads = tuple(int(w) for w in aux_heads)
        self.weighting = weighting
        self.aux_weights = tuple(float(w) for w in aux_weights)
        self.weight_seed = weight_seed
        self.conv1 = nn.Conv1d(in_channels, 16, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(16, 32, kernel_size=5, padding=2)
        self.fc = nn.Linear(32 * (length // 4), 64)
        self.main_head = nn.Linear(64, num_classes)
        self.aux = nn.ModuleList(nn.Linear(64, w) for w in self.aux_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool1d(F.relu(self.conv1(x)), 2)
        h = F.max_pool1d(F.relu(self.conv2(h)), 2)
        h = F.relu(self.fc(h.flatten(1)))
        main = self.main_head(h)
        if not self.training or not self.aux_heads:
            return main
        return torch.cat([main, *(head(h) for head in self.aux)], dim=1)

    def training_targets(self, data: TensorData) -> torch.Tensor:
        """(N, 1 + A) rows ``[y, aux…]`` of ``data``; NaN auxiliaries where it has none
        (a model without auxiliary heads ignores the data's auxiliary targets)."""
        y = data.y.to(torch.float32).unsqueeze(1)
        if not self.aux_heads:
            return y
        if data.aux is None:
            return torch.cat([y, torch.full((len(y), len(self.aux_heads)), float("nan"))], dim=1)
        if data.aux.shape[1] != len(self.aux_heads):
            raise ValueError(f"data has {data.aux.shape[1]} auxiliary targets, the model {len(self.aux_heads)} heads")
        return torch.cat([y, data.aux.to(torch.float32).cpu()], dim=1)

    def task_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A fresh :class:`MultiTaskLoss` for one training call."""
        return MultiTaskLoss(self.num_classes, self.aux_heads, self.weighting, self.aux_weights, self.weight_seed)


@register_model("mtl_cnn1d")
def mtl_cnn1d(
    in_channels: int = 2,
    length: int = 32,
    num_classes: int = 5,
    aux_heads: Sequence[int] = (1, 1),
    weighting: str = "random",
    aux_weights: Sequence[float] | None = None,
    weight_seed: int = 0,
) -> nn.Module:
    return MultiTaskCNN1D(in_channels, length, num_classes, aux_heads, weighting, aux_weights, weight_seed)


@register_model("cnn1d")
def cnn1d(in_channels: int = 2, length: int = 32, num_classes: int = 5) -> nn.Module:
    """The single-task baseline: the same backbone and main head, no auxiliary heads."""
    return MultiTaskCNN1D(in_channels, length, num_classes, aux_heads=())
