"""Deterministic partitions of a dataset over devices (vehicles).

- :func:`iid`: a seeded shuffle cut into near-equal parts;
- :func:`complete_non_iid`: two classes per device, power-law sizes (BMFL §V-B);
- :func:`dirichlet`: label skew with per-class Dirichlet(α) proportions (BMFL §V-B uses
  α = 0.9: "quantity non-IID").

Each returns a :class:`Partition`: one index tensor per device, every sample used at most
once, and a report of sizes and label histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Partition:
    indices: list[torch.Tensor]

    @property
    def sizes(self) -> list[int]:
        return [len(i) for i in self.indices]

    def label_histograms(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(devices × classes) sample counts."""
        labels = labels.cpu()
        return torch.stack([torch.bincount(labels[i], minlength=num_classes) for i in self.indices])

    def report(self, labels: torch.Tensor, num_classes: int) -> str:
        """One line per device: size and label histogram."""
        hist = self.label_histograms(labels, num_classes)
        lines = [f"device {d:3d}: {int(h.sum()):5d} samples  {h.tolist()}" for d, h in enumerate(hist)]
        return "\n".join(lines)


def _as_partition(groups: list[np.ndarray]) -> Partition:
    return Partition([torch.as_tensor(np.sort(g), dtype=torch.long) for g in groups])


def iid(num_samples: int, num_devices: int, seed: int) -> Partition:
    """Shuffle with ``seed`` and cut into ``num_devices`` parts differing by at most one."""
    if num_devices <= 0 or num_devices > num_samples:
        raise ValueError("need 1 ≤ num_devices ≤ num_samples")
    perm = np.random.default_rng(seed).permutation(num_samples)
    return _as_partition(np.array_split(perm, num_devices))


def _split_counts(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer counts ≥ ``minimum`` summing to ``total``, proportional to ``weights``
    (largest-remainder rounding)."""
    spare = total - minimum * len(weights)
    if spare < 0:
        raise ValueError(f"{total} samples cannot give {len(weights)} slots {minimum} each")
    share = spare * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: spare - counts.sum()]] += 1
    return counts + minimum


def complete_non_iid(
    labels: torch.Tensor,
    num_devices: int,
    seed: int,
    classes_per_device: int = 2,
    power_law_exponent: float = 1.5,
    min_per_class: int = 2,
) -> Partition:
    """Each device holds samples of exactly ``classes_per_device`` classes; device sizes
    follow a power law (Pareto weights with the given exponent).

    Classes are dealt so every class goes to (nearly) the same number of devices; each
    class's samples are then shared among its devices in proportion to their power-law
    weights, so all samples are used and sizes sum to the dataset size.
    """
    y = labels.cpu().numpy()
    classes = np.unique(y)
    if classes_per_device > len(classes):
        raise ValueError("classes_per_device exceeds the number of classes")
    rng = np.random.default_rng(seed)
    # Deal a seeded permutation of the classes round-robin: each device takes the next
    # ``classes_per_device`` slots of the repeated permutation, which are always distinct.
    slots = np.resize(rng.permutation(classes), num_devices * classes_per_device)
    assignment = slots.reshape(num_devices, classes_per_device)
    weights = rng.pareto(power_law_exponent, size=num_devices) + 1.0
    groups: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
    for c in classes:
        owners = np.nonzero((assignment == c).any(axis=1))[0]
        members = rng.permutation(np.nonzero(y == c)[0])
        counts = _split_counts(len(members), weights[owners], min_per_class)
        for owner, chunk in zip(owners, np.split(members, np.cumsum(counts)[:-1])):
            groups[owner].append(chunk)
    return _as_partition([np.concatenate(g) for g in groups])


def dirichlet(
    labels: torch.Tensor, num_devices: int, seed: int, alpha: float = 0.9, min_size: int = 10, max_tries: int = 1000
) -> Partition:
    """Per class, split its samples over devices with proportions ~ Dirichlet(α·1);
    redraw (bounded) until every device has at least ``min_size`` samples."""
    y = labels.cpu().numpy()
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        groups: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
        for c in classes:
            members = rng.permutation(np.nonzero(y == c)[0])
            cuts = (np.cumsum(rng.dirichlet(np.full(num_devices, alpha))) * len(members)).astype(np.int64)[:-1]
            for d, chunk in enumerate(np.split(members, cuts)):
                groups[d].append(chunk)
        merged = [np.concatenate(g) for g in groups]
        if min(len(g) for g in merged) >= min_size:
            return _as_partition(merged)
    raise ValueError(f"no Dirichlet({alpha}) draw gave every device ≥ {min_size} samples in {max_tries} tries")


def by_group(groups: torch.Tensor, num_devices: int) -> Partition:
    """Natural partition: device d gets the rows whose group (e.g. traffic cell) is d."""
    g = groups.cpu().numpy()
    if num_devices > len(np.unique(g)):
        raise ValueError(f"{num_devices} devices but only {len(np.unique(g))} groups")
    return _as_partition([np.nonzero(g == d)[0] for d in range(num_devices)])


def _iid(labels: torch.Tensor, num_devices: int, seed: int) -> Partition:
    return iid(len(labels), num_devices, seed)


def _by_group(labels: torch.Tensor, num_devices: int, seed: int) -> Partition:
    return by_group(labels, num_devices)


PARTITIONS = {"iid": _iid, "complete_non_iid": complete_non_iid, "dirichlet": dirichlet, "by_group": _by_group}


def make_partition(kind: str, labels: torch.Tensor, num_devices: int, seed: int, **options) -> Partition:
    """Partition by name (``iid``, ``complete_non_iid``, ``dirichlet``, ``by_group``);
    ``labels`` are the class labels (or, for ``by_group``, the group ids); ``options``
    go to the partition function (e.g. ``alpha`` for ``dirichlet``)."""
    try:
        split = PARTITIONS[kind]
    except KeyError:
        raise ValueError(f"unknown partition {kind!r}; one of {sorted(PARTITIONS)}") from None
    return split(labels, num_devices, seed, **options)
