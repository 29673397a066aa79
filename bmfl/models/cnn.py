"""The BMFL benchmark CNN (BMFL §V-B: "a two-layer convolutional neural network with
21840 trainable parameters")."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bmfl.models import register_model


class BMFLCNN(nn.Module):
    """conv 1→10 k5, max-pool 2, conv 10→20 k5, max-pool 2, fc 320→50, fc 50→10.

    260 + 5,020 + 16,050 + 510 = 21,840 trainable parameters on 28×28 inputs. No dropout
    and no batch norm: per-sample gradients (``torch.func``) need a stateless forward.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = partial(F.max_pool2d, kernel_size=2) if torch.is_grad_enabled() else max_pool_2x2
        x = F.relu(pool(self.conv1(x)))
        x = F.relu(pool(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` as the maximum of four strided views: the same values,
    several times faster on CPU without autograd (scoring); with autograd
    ``max_pool2d``'s indices make its backward the faster one."""
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    return torch.maximum(
        torch.maximum(x[..., ::2, ::2], x[..., ::2, 1::2]), torch.maximum(x[..., 1::2, ::2], x[..., 1::2, 1::2])
    )


@register_model("bmfl_cnn")
def bmfl_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return BMFLCNN(in_channels, num_classes)


class BMFLCNNGroupNorm(BMFLCNN):
    """:class:`BMFLCNN` with GroupNorm after each convolution (2 groups of 5 channels,
    then 4 groups of 5): it normalises each sample on its own, so a sample's output and
    gradient do not depend on the rest of the batch, and per-sample clipping (DP-SGD)
    stays exact — unlike batch norm. 21,840 + 60 affine parameters = 21,900."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__(in_channels, num_classes)
        self.norm1 = nn.GroupNorm(2, 10)
        self.norm2 = nn.GroupNorm(4, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.norm1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.norm2(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


@register_model("bmfl_cnn_gn")
def bmfl_cnn_gn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return BMFLCNNGroupNorm(in_channels, num_classes)
