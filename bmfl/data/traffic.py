"""Wireless-traffic forecasting data (poisoning study ``001`` §II-A and §VI-A).

- :func:`load_telecom_italia`: the Telecom Italia "SMS, Call, Internet" grid files
  (Milan / Trentino) a user supplies; tab-separated rows
  ``square_id, time_interval_ms, country_code, sms_in, sms_out, call_in, call_out, internet``
  with empty fields for zero, 10-minute intervals, summed here per cell and resampled.
- :func:`synthetic_traffic`: a seeded generator with daily and weekly periodicity,
  per-cell scale and noise, for tests and offline runs.
- :func:`sliding_windows`: the (closeness p, period q) sample builder.
- :func:`traffic_task`: per-cell windows, the last ``test_days`` held out as test data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from bmfl.data.base import TensorData

KINDS = {"sms": (3, 4), "call": (5, 6), "internet": (7,)}


@dataclass(frozen=True)
class TrafficSeries:
    """``values[c, t]``: traffic of cell ``cell_ids[c]`` in interval ``t``."""

    values: np.ndarray
    cell_ids: np.ndarray
    start_ms: int
    interval_minutes: int

    @property
    def steps_per_day(self) -> int:
        return 24 * 60 // self.interval_minutes


def load_telecom_italia(
    paths: Iterable[str | Path],
    kind: str = "internet",
    interval_minutes: int = 60,
    cells: Iterable[int] | None = None,
) -> TrafficSeries:
    """Read Telecom Italia grid files and return one series per cell.

    ``kind`` is ``sms`` (in + out), ``call`` (in + out) or ``internet``; country codes are
    summed; intervals with no record count as zero traffic.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown traffic kind {kind!r}; one of {sorted(KINDS)}")
    if interval_minutes % 10 or (24 * 60) % interval_minutes:
        raise ValueError("interval_minutes must be a multiple of 10 dividing a day")
    wanted = None if cells is None else set(int(c) for c in cells)
    rows: list[tuple[int, int, float]] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 8:
                    raise ValueError(f"{path}:{line_no}: expected 8 tab-separated fields, got {len(fields)}")
                cell = int(fields[0])
                if wanted is not None and cell not in wanted:
                    continue
                volume = sum(float(fields[i]) for i in KINDS[kind] if fields[i])
                rows.append((cell, int(fields[1]), volume))
    if not rows:
        raise ValueError("no traffic records read")
    data = np.asarray(rows, dtype=np.float64)
    cell_ids, cell_index = np.unique(data[:, 0].astype(np.int64), return_inverse=True)
    bucket_ms = interval_minutes * 60_000
    start_ms = int(data[:, 1].min()) // bucket_ms * bucket_ms
    step = ((data[:, 1].astype(np.int64) - start_ms) // bucket_ms).astype(np.int64)
    values = np.zeros((len(cell_ids), int(step.max()) + 1))
    np.add.at(values, (cell_index, step), data[:, 2])
    return TrafficSeries(values, cell_ids, start_ms, interval_minutes)


def synthetic_traffic(
    num_cells: int = 10, days: int = 28, interval_minutes: int = 60, noise: float = 0.1, seed: int = 0
) -> TrafficSeries:
    """Seeded traffic with a daily cycle (peaks by day, trough at night), a weekly cycle
    (lower weekends), a log-normal per-cell scale and phase, and multiplicative noise."""
    rng = np.random.default_rng(seed)
    per_day = 24 * 60 // interval_minutes
    t = np.arange(days * per_day) / per_day  # time in days
    scale = rng.lognormal(mean=0.0, sigma=0.5, size=(num_cells, 1))
    phase = rng.normal(0.0, 0.05, size=(num_cells, 1))
    daily = 1.0 + 0.6 * np.sin(2 * math.pi * (t - 0.375 + phase)) + 0.2 * np.sin(4 * math.pi * (t + phase))
    weekday = np.floor(t) % 7
    weekly = np.where(weekday >= 5, 0.7, 1.0) + 0.05 * np.sin(2 * math.pi * t / 7)
    clean = scale * np.clip(daily * weekly, 0.05, None)
    values = clean * rng.lognormal(mean=0.0, sigma=noise, size=clean.shape)
    return TrafficSeries(values, np.arange(num_cells), 0, interval_minutes)


def sliding_windows(series: np.ndarray, closeness: int, period: int, period_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples (x_t, y_t) from one series v (``001`` §II-A).

    x_t = [v_{t-p}, …, v_{t-1}] (closeness, p = ``closeness`` values) followed by
    [v_{t-qφ}, …, v_{t-φ}] (the same phase in the previous q = ``period`` periods,
    φ = ``period_length``); y_t = v_t. The paper's printed index list is garbled; this is
    the closeness/period split it describes (and FedDA's code builds).
    """
    v = np.asarray(series, dtype=np.float64)
    first = max(closeness, period * period_length)
    if len(v) <= first:
        raise ValueError(f"series of length {len(v)} too short for p={closeness}, q={period}, φ={period_length}")
    t = np.arange(first, len(v))
    close_idx = t[:, None] - np.arange(closeness, 0, -1)[None, :]
    period_idx = t[:, None] - period_length * np.arange(period, 0, -1)[None, :]
    x = np.concatenate([v[close_idx], v[period_idx]], axis=1)
    return x, v[t]


def _split(traffic: TrafficSeries, test_days: int) -> int:
    """Index of the first test time step (the last ``test_days`` days are test data)."""
    split = traffic.values.shape[1] - test_days * traffic.steps_per_day
    if split <= 0:
        raise ValueError("not enough days of traffic for the test split")
    return split


def standardisation(traffic: TrafficSeries, test_days: int = 7) -> tuple[float, float]:
    """(mean, std) of log1p traffic over the training days: :func:`traffic_task`'s
    samples are z = (log1p(v) − mean) / std."""
    logged = np.log1p(np.maximum(traffic.values[:, : _split(traffic, test_days)], 0.0))
    return float(logged.mean()), float(logged.std()) + 1e-8


def original_errors(predicted: torch.Tensor, target: torch.Tensor, mean: float, std: float) -> tuple[float, float]:
    """(RMSE, MAE) of standardised predictions on the original traffic scale, after
    undoing :func:`traffic_task`'s scaling: v = expm1(z·std + mean)."""
    back = lambda z: torch.expm1(z.to(torch.float64) * std + mean)  # noqa: E731
    error = back(predicted) - back(target)
    return float(error.pow(2).mean().sqrt()), float(error.abs().mean())


def traffic_task(
    traffic: TrafficSeries, closeness: int = 3, period: int = 3, test_days: int = 7
) -> tuple[TensorData, TensorData]:
    """Per-cell windowed samples; the last ``test_days`` of every cell are test data.

    Values are scaled by log1p then standardised with the training part's mean and std
    (the scaler never sees test data). ``groups`` holds each row's cell index so a
    federated run gives each base station its own cell.
    """
    per_day, split = traffic.steps_per_day, _split(traffic, test_days)
    mean, std = standardisation(traffic, test_days)
    scaled = (np.log1p(np.maximum(traffic.values, 0.0)) - mean) / std
    parts: dict[str, list] = {"train_x": [], "train_y": [], "train_g": [], "test_x": [], "test_y": [], "test_g": []}
    for cell, series in enumerate(scaled):
        x, y = sliding_windows(series, closeness, period, per_day)
        first = len(series) - len(y)  # time index of the first target
        is_test = np.arange(first, len(series)) >= split
        for name, mask in (("train", ~is_test), ("test", is_test)):
            parts[f"{name}_x"].append(x[mask])
            parts[f"{name}_y"].append(y[mask])
            parts[f"{name}_g"].append(np.full(int(mask.sum()), cell))

    def build(name: str) -> TensorData:
        return TensorData(
            torch.as_tensor(np.concatenate(parts[f"{name}_x"]), dtype=torch.float32),
            torch.as_tensor(np.concatenate(parts[f"{name}_y"]), dtype=torch.float32),
            None,
            torch.as_tensor(np.concatenate(parts[f"{name}_g"]), dtype=torch.long),
        )

    return build("train"), build("test")
