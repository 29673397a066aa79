"""Traffic classification on flows (FedAuxHMTL, seed ``002``): per flow, the first L
packets as a 2-channel sequence, the application class, and auxiliary targets.

Every flow becomes ``x`` (2, L): channel 0 the signed packet size / 1500 (positive
downstream, negative upstream), channel 1 (log10 of the inter-arrival time in seconds
+ 3) / 3, about −1 to 1 (0 for the first packet), zero-padded past the flow's end. The auxiliary targets
(``TensorData.aux``) are the standardised log of the whole flow's bytes (``volume``) and
of its duration in seconds (``duration``), whole-flow figures the first L packets only
hint at.

- :func:`synthetic_flows`: a seeded generator (no download) of five application
  profiles; each flow draws a latent intensity that sets both its packets and its volume
  and duration, so the auxiliary targets correlate with what the model sees;
- :func:`load_packet_csv`: packets from a CSV a user supplies (e.g. exported from a
  capture with ``tshark``), with a header naming the columns ``flow_id``, ``time``
  (seconds), ``size`` (bytes), ``direction`` (``1``/``down`` downstream, ``0``/``up``
  upstream) and ``label`` (the application, constant within a flow), in any order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from bmfl.data.base import TensorData

APPS = ("search", "docs", "drive", "music", "video")
"""The synthetic classes (after the QUIC dataset's Google services)."""
AUX_TARGETS = ("volume", "duration")

# app: (downstream size fraction of 1500, share of downstream packets, log10 mean
# inter-arrival time, log mean packets per flow)
_PROFILES = np.array([
    [0.45, 0.55, -1.6, 3.4],  # search: short, mixed, bursty
    [0.35, 0.45, -1.2, 4.2],  # docs: interactive, many small upstream packets
    [0.80, 0.50, -2.3, 5.6],  # drive: bulk, full-size packets both ways
    [0.70, 0.75, -1.8, 5.2],  # music: steady downstream
    [0.90, 0.85, -2.5, 6.4],  # video: long, full-size downstream bursts
])  # fmt: skip


def flow_features(sizes: list[np.ndarray], times: list[np.ndarray], downs: list[np.ndarray], length: int) -> np.ndarray:
    """(N, 2, L) features from each flow's packets (sorted by time)."""
    x = np.zeros((len(sizes), 2, length), dtype=np.float32)
    for i, (s, t, d) in enumerate(zip(sizes, times, downs)):
        n = min(length, len(s))
        x[i, 0, :n] = np.where(d[:n], 1.0, -1.0) * s[:n] / 1500.0
        gaps = np.diff(t[:n], prepend=t[0])
        x[i, 1, :n] = np.where(gaps > 0, (np.log10(np.maximum(gaps, 1e-6)) + 3.0) / 3.0, 0.0)
    return x


def _standardise(columns: np.ndarray) -> np.ndarray:
    return (columns - columns.mean(0)) / (columns.std(0) + 1e-8)


def synthetic_flows(num_flows: int = 3000, length: int = 32, noise: float = 1.0, seed: int = 0) -> TensorData:
    """``num_flows`` seeded flows, classes balanced in expectation. ``noise`` scales
    the within-class spread (larger: classes overlap more)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(APPS), num_flows)
    p = _PROFILES[labels]
    intensity = rng.normal(0.0, 1.0, num_flows)  # one latent per flow: packets and aux targets
    size_mean = np.clip(p[:, 0] + 0.08 * noise * intensity + 0.1 * noise * rng.normal(size=num_flows), 0.05, 1.0)
    down_share = np.clip(p[:, 1] + 0.1 * noise * rng.normal(size=num_flows), 0.05, 0.95)
    gap_mean = p[:, 2] - 0.2 * noise * intensity + 0.25 * noise * rng.normal(size=num_flows)
    total_packets = np.maximum(length // 2, np.exp(p[:, 3] + 0.5 * intensity + 0.3 * rng.normal(size=num_flows)))
    down = rng.random((num_flows, length)) < down_share[:, None]
    up_size = np.clip(rng.normal(0.06, 0.03, (num_flows, length)), 0.03, 1.0)
    down_size = np.clip(size_mean[:, None] + 0.15 * noise * rng.normal(size=(num_flows, length)), 0.03, 1.0)
    sizes = 1500.0 * np.where(down, down_size, up_size)
    gaps = 10.0 ** (gap_mean[:, None] + 0.4 * noise * rng.normal(size=(num_flows, length)))
    times = np.cumsum(gaps, axis=1) - gaps[:, :1]
    x = flow_features(list(sizes), list(times), list(down), length)
    volume = np.log(total_packets * 1500.0 * (down_share * size_mean + (1 - down_share) * 0.06))
    duration = np.log(total_packets * 10.0 ** gap_mean)
    aux = _standardise(np.stack([volume, duration], axis=1))
    return TensorData(
        torch.as_tensor(x), torch.as_tensor(labels, dtype=torch.long), len(APPS), None,
        torch.as_tensor(aux, dtype=torch.float32),
    )  # fmt: skip


_DIRECTIONS = {"1": True, "down": True, "0": False, "up": False}
COLUMNS = ("flow_id", "time", "size", "direction", "label")


def load_packet_csv(path: str | Path, length: int = 32) -> tuple[TensorData, tuple[str, ...]]:
    """Flows from a packet CSV (see the module docstring); returns the data and the
    class names (sorted labels, the class index is the position)."""
    flows: dict[str, list[tuple[float, float, bool]]] = {}
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (need {', '.join(COLUMNS)})")
        for line_no, row in enumerate(reader, 2):
            direction = _DIRECTIONS.get(row["direction"].strip().lower())
            if direction is None:
                raise ValueError(f"{path}:{line_no}: direction {row['direction']!r} is not 1/down or 0/up")
            try:
                packet = (float(row["time"]), float(row["size"]), direction)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: time and size must be numbers") from None
            flow, label = row["flow_id"], row["label"].strip()
            if labels.setdefault(flow, label) != label:
                raise ValueError(f"{path}:{line_no}: flow {flow!r} has two labels")
            flows.setdefault(flow, []).append(packet)
    if not flows:
        raise ValueError(f"{path}: no packets")
    classes = tuple(sorted(set(labels.values())))
    ordered = [sorted(flows[f]) for f in flows]
    times = [np.array([p[0] for p in pk]) for pk in ordered]
    sizes = [np.array([p[1] for p in pk]) for pk in ordered]
    downs = [np.array([p[2] for p in pk]) for pk in ordered]
    x = flow_features(sizes, times, downs, length)
    volume = np.log(np.array([s.sum() for s in sizes]) + 1.0)
    duration = np.log(np.array([t[-1] - t[0] for t in times]) + 1e-3)
    aux = _standardise(np.stack([volume, duration], axis=1))
    y = torch.tensor([classes.index(labels[f]) for f in flows], dtype=torch.long)
    return TensorData(torch.as_tensor(x), y, len(classes), None, torch.as_tensor(aux, dtype=torch.float32)), classes
