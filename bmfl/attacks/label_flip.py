"""Label flipping: the vehicle trains honestly on relabelled data, y ↦ C − 1 − y by
default, or an explicit ``mapping`` {source: target} (other labels unchanged)."""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, register_attack
from bmfl.data.base import TensorData


@register_attack("label_flip")
class LabelFlip(Attack):
    def __init__(self, mapping: dict[int, int] | None = None) -> None:
        self.mapping = mapping

    def flip(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        if self.mapping is None:
            return num_classes - 1 - labels
        table = torch.arange(num_classes)
        for source, target in self.mapping.items():
            table[source] = target
        return table[labels]

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        if data.num_classes is None:
            raise ValueError("label flipping needs classification data")
        return TensorData(data.x, self.flip(data.y, data.num_classes), data.num_classes, data.groups)
