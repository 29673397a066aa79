"""Batched evaluation of a model on a dataset."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bmfl.data.base import TensorData
from bmfl.models.features import featurized


@dataclass(frozen=True)
class Evaluation:
    """Classification: ``accuracy`` and mean cross-entropy ``loss``. Regression:
    ``loss`` = MSE, ``mae``; ``accuracy`` is None."""

    loss: float
    accuracy: float | None = None
    mae: float | None = None
    samples: int = 0


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, batch_size: int = 2048) -> Evaluation:
    data = featurized(model, data)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct, abs_err = 0.0, 0, 0.0
    for start in range(0, len(data), batch_size):
        xb = data.x[start : start + batch_size].to(device)
        yb = data.y[start : start + batch_size].to(device)
        out = model(xb)
        if data.is_classification:
            total_loss += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
        else:
            total_loss += float(F.mse_loss(out, yb, reduction="sum"))
            abs_err += float((out - yb).abs().sum())
    model.train(was_training)
    n = max(1, len(data))
    if data.is_classification:
        return Evaluation(loss=total_loss / n, accuracy=correct / n, samples=len(data))
    return Evaluation(loss=total_loss / n, mae=abs_err / n, samples=len(data))
