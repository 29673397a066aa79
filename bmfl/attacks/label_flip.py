"""Label flipping: the vehicle trains honestly, DP included, on relabelled data: y ↦ C − 1 − y
by default (every label, an untargeted attack), or an explicit ``mapping`` {source: target}
with the other labels unchanged (a targeted attack: Tolpegin et al. 2020, "Data Poisoning
Attacks Against Federated Learning Systems"). Its uploads are honest DP-SGD updates on
wrong labels, so nothing in their noise or size sets them apart. A targeted flip's
success is the fraction of the test images of its source classes classified as their
targets (:meth:`LabelFlip.success_rate`)."""

from __future__ import annotations

import torch
from torch import nn

from bmfl.attacks.base import Attack, predicted_labels, register_attack
from bmfl.data.base import TensorData


@register_attack("label_flip")
class LabelFlip(Attack):
    def __init__(self, mapping: dict[int, int] | None = None) -> None:
        self.mapping = None if mapping is None else {int(s): int(t) for s, t in mapping.items()}

    def flip(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        if self.mapping is None:
            return num_classes - 1 - labels
        if not all(0 <= c < num_classes for pair in self.mapping.items() for c in pair):
            raise ValueError(f"label_flip mapping {self.mapping} names a class outside 0..{num_classes - 1}")
        table = torch.arange(num_classes)
        for source, target in self.mapping.items():
            table[source] = target
        return table[labels]

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        if data.num_classes is None:
            raise ValueError("label flipping needs classification data")
        return TensorData(data.x, self.flip(data.y, data.num_classes), data.num_classes, data.groups)

    def success_rate(self, model: nn.Module, test: TensorData) -> float | None:
        """A targeted flip's: the share of test images of its source classes that ``model``
        classifies as their targets (None for the untargeted flip, and where the test set
        holds no source image)."""
        if self.mapping is None:
            return None
        sources = torch.tensor(sorted(self.mapping))
        rows = torch.isin(test.y, sources).nonzero().flatten()
        if len(rows) == 0:
            return None
        targets = self.flip(test.y[rows], test.num_classes)
        return int((predicted_labels(model, test.x[rows]) == targets).sum()) / len(rows)
