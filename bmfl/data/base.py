"""The in-memory dataset type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorData:
    """Inputs ``x`` and targets ``y`` (class indices, or real values for regression)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int | None = None  # None for regression targets
    groups: torch.Tensor | None = None  # natural owner of each row (e.g. the traffic cell)
    aux: torch.Tensor | None = None  # (N, A) auxiliary targets of a multi-task model, or None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError(f"groups has {len(self.groups)} rows but y has {len(self.y)}")
        if self.aux is not None and (self.aux.dim() != 2 or len(self.aux) != len(self.y)):
            raise ValueError(f"aux must be (N, A) with N = {len(self.y)} rows")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    def subset(self, indices: torch.Tensor | list[int]) -> "TensorData":
        idx = torch.as_tensor(indices, dtype=torch.long)
        groups = None if self.groups is None else self.groups[idx]
        aux = None if self.aux is None else self.aux[idx]
        return TensorData(self.x[idx], self.y[idx], self.num_classes, groups, aux)

    def to(self, device: torch.device | str) -> "TensorData":
        aux = None if self.aux is None else self.aux.to(device)
        return TensorData(self.x.to(device), self.y.to(device), self.num_classes, self.groups, aux)

    def label_histogram(self) -> torch.Tensor:
        """Count per class (classification only)."""
        if self.num_classes is None:
            raise ValueError("regression data has no label histogram")
        return torch.bincount(self.y.cpu(), minlength=self.num_classes)


def train_test_split(data: TensorData, test_fraction: float, seed: int) -> tuple[TensorData, TensorData]:
    """Shuffle with ``seed`` and hold out ``test_fraction`` of the rows as the task's
    private test set (the publisher's, sent to edges only). Classification splits are
    stratified so every class appears in both parts in proportion."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    if data.num_classes is None:
        perm = torch.randperm(len(data), generator=gen)
        n_test = max(1, round(test_fraction * len(data)))
        return data.subset(perm[n_test:]), data.subset(perm[:n_test])
    train_idx, test_idx = [], []
    labels = data.y.cpu()
    for c in range(data.num_classes):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = round(test_fraction * len(members))
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    train = torch.cat(train_idx)
    test = torch.cat(test_idx)
    return data.subset(train[torch.randperm(len(train), generator=gen)]), data.subset(
        test[torch.randperm(len(test), generator=gen)]
    )
