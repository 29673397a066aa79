"""Shared helpers of the vehicle tests: small image data, vehicles and assignments."""

from __future__ import annotations

import torch
from eth_account import Account

from bmfl.data import TensorData
from bmfl.protocol.schemas import Assignment, TrainingSpec
from chain.anvil import dev_key

CHAIN_ID = 31337
EDGE = Account.from_key(dev_key(1)).address


def image_data(n: int = 24, seed: int = 0) -> TensorData:
    gen = torch.Generator().manual_seed(seed)
    return TensorData(torch.rand(n, 1, 28, 28, generator=gen), torch.arange(n) % 10, num_classes=10)


def assignment(round_: int = 1, task_id: int = 7, **training: object) -> Assignment:
    spec = TrainingSpec(**({"epochs": 1, "batch_size": 8, "lr": 0.1, "noise_multiplier": 1.0} | training))
    return Assignment(
        task_id=task_id, round=round_, selected=True, open=True, global_cid="unused", global_digest="0x" + "00" * 32,
        model="bmfl_cnn", training=spec, edge=EDGE,
    )  # fmt: skip
