"""The publisher's private test set as a strict ``safetensors`` blob (never pickle).

Two tensors, ``x`` (float32 inputs) and ``y`` (int64 class labels, or float32 targets
for regression), and the metadata ``kind = bmfl-testset`` and ``num_classes`` (empty
for regression). The chain records the sha2-256 of these bytes; edges decode them with
:func:`decode_test_set`, which checks everything before anything is used.

:func:`encode_test_set` is the one encoder publishers use (``bmfl task encode-test-set``
on the command line): its bytes depend only on the data (sorted header, fixed tensor
order; :func:`bmfl.blobs.codec.canonical_safetensors`), so any process re-encoding the
same data gets the digest escrowed on chain. Keep the file it writes and upload those
exact bytes.
"""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load as st_load

from bmfl.blobs.codec import canonical_safetensors
from bmfl.data.base import TensorData
from bmfl.params import all_finite

KIND = "bmfl-testset"
MAX_TEST_SET_BYTES = 256 << 20


class TestSetError(ValueError):
    """The bytes are not a valid test set."""

    __test__ = False  # not a pytest test class


def encode_test_set(data: TensorData) -> bytes:
    """Canonical bytes of ``data``: the same data gives the same bytes, and so the same
    sha2-256 digest, in every process and on every machine."""
    y = data.y.to(torch.int64) if data.is_classification else data.y.to(torch.float32)
    tensors = {"x": data.x.to(torch.float32).contiguous().cpu(), "y": y.contiguous().cpu()}
    meta = {"kind": KIND, "num_classes": "" if data.num_classes is None else str(data.num_classes)}
    return canonical_safetensors(tensors, meta)


def _header(raw: bytes) -> dict:
    if len(raw) < 8:
        raise TestSetError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(len(raw) - 8, 1 << 20):
        raise TestSetError("header length exceeds the blob")
    try:
        return json.loads(raw[8 : 8 + n])
    except ValueError as exc:
        raise TestSetError(f"header is not JSON: {exc}") from None


def decode_test_set(raw: bytes, max_bytes: int = MAX_TEST_SET_BYTES) -> TensorData:
    """Decode and validate a test set: kind, exactly ``x`` and ``y``, matching rows,
    finite inputs, labels in ``[0, num_classes)``."""
    if len(raw) > max_bytes:
        raise TestSetError(f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")
    header = _header(raw)
    meta = header.pop("__metadata__", None) or {}
    if meta.get("kind") != KIND:
        raise TestSetError(f"metadata kind must be {KIND!r}")
    if set(header) != {"x", "y"}:
        raise TestSetError(f"tensors must be exactly x and y, got {sorted(header)}")
    try:
        tensors = st_load(bytes(raw))
    except Exception as exc:  # safetensors raises its own error types
        raise TestSetError(f"safetensors refused the blob: {exc}") from None
    x, y = tensors["x"], tensors["y"]
    classes = meta.get("num_classes", "")
    num_classes = int(classes) if classes.isdigit() and int(classes) > 0 else None
    if classes and num_classes is None:
        raise TestSetError(f"num_classes {classes!r} is not a positive integer")
    if x.dtype != torch.float32 or x.dim() < 2 or len(x) == 0:
        raise TestSetError("x must be a non-empty float32 tensor with a batch dimension")
    if len(y) != len(x):
        raise TestSetError(f"x has {len(x)} rows but y has {len(y)}")
    if not all_finite(x):
        raise TestSetError("x holds NaN or Inf")
    if num_classes is not None:
        if y.dtype != torch.int64 or y.dim() != 1:
            raise TestSetError("classification labels must be a 1-D int64 tensor")
        if bool(((y < 0) | (y >= num_classes)).any()):
            raise TestSetError(f"labels outside [0, {num_classes})")
    elif y.dtype != torch.float32 or not all_finite(y):
        raise TestSetError("regression targets must be finite float32")
    return TensorData(x, y, num_classes)
