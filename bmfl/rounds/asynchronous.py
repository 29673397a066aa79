"""Asynchronous rounds with bounded staleness (BAFDP, seed ``000``; docs/algorithms.md,
"Asynchronous rounds"): the global model w_t has a version t; every report carries the
version it trained from, its staleness is τ = t − base, reports with τ > τ_max are
refused, and a buffer of S reports is filtered and aggregated by the edge rule of the
registry, then applied with a staleness weighting (:class:`bmfl.task.AsyncSpec`).

With S = every vehicle, τ_max = 0, η_g = 1 (fedbuff) or α = 1 (fedasync), one buffer is
exactly one synchronous edge close (:func:`bmfl.rounds.aggregate_edge`), bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from bmfl.aggregation import Aggregator, Verdict
from bmfl.rounds.edge import EdgeOutcome, aggregate_edge
from bmfl.rounds.standing import Standings
from bmfl.task import AsyncSpec

STALE = "stale"
"""Verdict reason of a report whose staleness exceeds τ_max (it earns nothing)."""


def polynomial(tau: int, alpha: float = 1.0, a: float = 0.5) -> float:
    """FedAsync's polynomial staleness weight α(τ) = α·(τ+1)^(−a) (Xie et al. 2019, §5.2)."""
    if tau < 0:
        raise ValueError(f"staleness must be non-negative, got {tau}")
    return alpha * (tau + 1) ** (-a)


def staleness_weight(tau: int, spec: AsyncSpec) -> float:
    """s(τ) = (τ+1)^(−a), the staleness discount of FedBuff's deltas and FedAsync's α(τ)/α;
    a report's contribution to the payouts is θ_m·s(τ_m) (exactly θ_m at τ = 0)."""
    return polynomial(tau, 1.0, spec.exponent)


def stale_verdict(version: int, base: int, tau_max: int) -> Verdict | None:
    """The refusal of a report trained from ``base`` when the model is at ``version``
    (τ = version − base > τ_max), or None when it is admitted."""
    tau = version - base
    if tau < 0:
        raise ValueError(f"a report cannot come from a future version ({base} > {version})")
    return Verdict(0.0, True, STALE) if tau > tau_max else None


def buffer_ready(count: int, waited_s: float, spec: AsyncSpec, participants: int) -> bool:
    """Apply the buffer now: it holds S reports (S = ``participants`` when unset), or it
    is non-empty and ``timeout_s`` has passed since the previous update."""
    size = spec.buffer_size or participants
    return count >= min(size, participants) or (count > 0 and spec.timeout_s is not None and waited_s >= spec.timeout_s)


@dataclass(frozen=True)
class Report:
    """One vehicle's report: its upload w̃_m, trained from the model ``base`` of
    version ``version``."""

    upload: torch.Tensor
    base: torch.Tensor
    version: int


@dataclass(frozen=True)
class BufferOutcome:
    """``model``: w_{t+1} (None: nothing applicable, w stays); ``verdicts`` per vehicle
    (``stale`` for refused reports); ``staleness`` τ per vehicle; ``rate``: the share of
    the buffer's aggregate in w_{t+1} (fedasync's ᾱ, fedbuff's η_g); ``samples``: the
    data behind the kept reports; ``contributions``: θ_m·s(τ_m) per vehicle
    (:func:`staleness_weight`), what the chain records and the payouts split."""

    model: torch.Tensor | None
    verdicts: dict[int, Verdict]
    staleness: dict[int, int]
    rate: float
    samples: int
    contributions: dict[int, float]


def apply_buffer(
    rule: Aggregator, reports: Mapping[int, Report], sizes: Mapping[int, int], current: torch.Tensor, version: int,
    spec: AsyncSpec,
) -> BufferOutcome:  # fmt: skip
    """Aggregate a buffer (vehicle → :class:`Report`) into w_{t+1} from w_t = ``current``.

    fedbuff (Nguyen et al. 2022, Alg. 1): each delta Δ_m = w̃_m − w_base is rebased on
    w_t; the filters judge w_t + Δ_m (the delta as the vehicle sent it, so a stale honest
    one keeps its DP noise level), and the rule aggregates w_t + s(τ_m)Δ_m with
    s(τ) = (τ+1)^(−a) into agg; then
    w_{t+1} = w_t + η_g(agg − w_t). fedasync (Xie et al. 2019, Eq. 2 over a buffer): the
    rule runs over the uploads as sent, and w_{t+1} = (1 − ᾱ)w_t + ᾱ·agg with
    ᾱ = mean over kept reports of α(τ_m+1)^(−a); one report per buffer is FedAsync itself.
    A τ = 0 report enters unchanged."""
    staleness = {v: version - r.version for v, r in sorted(reports.items())}
    refused = {}
    for v, r in reports.items():
        verdict = stale_verdict(version, r.version, spec.tau_max)
        if verdict is not None:
            refused[v] = verdict.reason
    inputs, scales = {}, {}
    for v, r in reports.items():
        tau = staleness[v]
        if spec.weighting == "fedbuff" and tau > 0 and v not in refused:
            inputs[v] = current + (r.upload - r.base)
            scales[v] = staleness_weight(tau, spec)
        else:
            inputs[v] = r.upload
    outcome = aggregate_edge(rule, inputs, sizes, current, version + 1, refused, scales)
    contributions = {v: x.theta * staleness_weight(staleness[v], spec) for v, x in outcome.verdicts.items()}
    if outcome.preliminary is None:
        return BufferOutcome(None, outcome.verdicts, staleness, 0.0, 0, contributions)
    agg = outcome.preliminary
    if spec.weighting == "fedbuff":
        rate = spec.server_lr
        model = agg + (rate - 1.0) * (agg - current)  # = w_t + η_g(agg − w_t); exactly agg at η_g = 1
    else:
        kept = [staleness[v] for v, verdict in outcome.verdicts.items() if verdict.kept]
        rate = sum(polynomial(t, spec.alpha, spec.exponent) for t in kept) / len(kept) if kept else 0.0
        model = (1.0 - rate) * current + rate * agg
    return BufferOutcome(model, outcome.verdicts, staleness, rate, outcome.samples, contributions)


def close_edge(
    rule: Aggregator, uploads: Mapping[int, torch.Tensor], sizes: Mapping[int, int], reference: torch.Tensor, round_: int,
    spec: AsyncSpec, bases: Mapping[int, tuple[int, torch.Tensor]], standing: Standings | None = None,
) -> tuple[EdgeOutcome, dict[int, float]]:  # fmt: skip
    """An edge's close of round ``round_`` from w^{round−1} = ``reference``, as the edge
    and the re-execution audit run it: synchronous, :func:`aggregate_edge` (with the
    vehicles' ``standing`` at the edge where the task keeps one); asynchronous,
    :func:`apply_buffer` (version round − 1) over reports trained from ``bases`` (vehicle →
    (base round, that round's global model)). Returns the outcome and each vehicle's
    contribution, θ·s(τ) (θ in a synchronous task)."""
    if spec.mode == "sync":
        outcome = aggregate_edge(rule, uploads, sizes, reference, round_, standing=standing)
        return outcome, {v: x.theta for v, x in outcome.verdicts.items()}
    reports = {v: Report(up, bases[v][1], bases[v][0] - 1) for v, up in uploads.items()}
    buffer = apply_buffer(rule, reports, sizes, reference, round_ - 1, spec)
    return EdgeOutcome(buffer.model, buffer.samples, buffer.verdicts), buffer.contributions
