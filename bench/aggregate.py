"""Residual reweighting (BMFL Eq. 14–23) at K = 10, 50, 100 uploads and d = 21,840 (the
BMFL CNN), 1.2M and 11M parameters: our compiled pass (one thread) vs a straightforward
per-coordinate port of the same maths (one Python/NumPy iteration per coordinate, as in
the authors' reference code), and against the rule's vectorised tensor path (what it
ran on the CPU before the compiled pass, and still runs off the CPU), measured in one run
on synthetic uploads (20 % sign flippers, γ = −10); and the peak memory of the rule at an
edge of 500 trainers.

The per-coordinate port costs the same for every coordinate, so it is timed on a subset
of coordinates (about ``--sample`` seconds' worth) and extrapolated linearly to d. Ours
is timed on all d coordinates when its first chunk predicts at most ``--budget``
seconds, else on a subset too and extrapolated (it works in independent chunks of
coordinates); the table says which. On the port's subset both must give the same
aggregate (max |difference| printed). Last, the peak resident memory of one edge's rule
at K = 500 uploads of the BMFL CNN (d = 21,840), ours against the vectorised path, each
in its own process (``bench.isolate``).

    python -m bench.aggregate [--k 10 50 100] [--d 21840 1200000 11000000] [--budget 120] [--edge-k 500]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from bench.common import Row, print_rows, progress
from bench.isolate import run_isolated
from bmfl.aggregation import get_aggregator

CHUNK = 4096  # the rule's default chunk of coordinates


def reference_reweight(updates: np.ndarray, lam: float = 2.0, threshold: float = 0.1) -> np.ndarray:
    """Per-coordinate loop, paper θ variant (docs/algorithms.md §3 steps 1–8)."""
    k, d = updates.shape
    x = np.arange(k, dtype=np.float64)
    centre, sxx = (k - 1) / 2, k * (k * k - 1) / 12
    corrected = np.empty_like(updates, dtype=np.float64)
    theta = np.zeros(k)
    for n in range(d):
        y = updates[:, n].astype(np.float64)
        order = np.argsort(y, kind="stable")
        ys = y[order]
        slopes = [np.median([(ys[j] - ys[i]) / (x[j] - x[i]) for j in range(k) if j != i]) for i in range(k)]
        beta1 = np.median(slopes)
        beta0 = np.median(ys) - beta1 * centre
        ranks = np.empty(k)
        ranks[order] = x
        line = beta0 + beta1 * ranks
        r = y - line
        tau = 1.4826 * (1 + 5 / (k - 1)) * np.median(np.sort(np.abs(r))[1:]) + 1e-7
        h = 1 / k + (ranks - centre) ** 2 / sxx
        with np.errstate(divide="ignore", invalid="ignore"):
            varpi = np.minimum(1.0, lam * math.sqrt(2 / k) * np.sqrt(1 - h) / np.abs(r / tau))
        varpi = np.nan_to_num(varpi, nan=1.0)
        low = varpi < threshold
        corrected[:, n] = np.where(low, line, y)
        theta += np.where(low, 0.0, varpi)
    weights = theta / theta.sum()
    return (weights[:, None] * corrected).sum(0)


def synthetic(k: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K uploads around a reference, the first 20 % sign-flipped (×−10)."""
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(d, generator=gen) * 0.1
    updates = ref + 0.01 * torch.randn(k, d, generator=gen)
    updates[: k // 5] *= -10
    return updates, ref


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _time_rule(rule, k: int, d: int, budget: float) -> tuple[float, str]:
    """Seconds ``rule`` takes on (K, d) uploads: all d when its first chunk predicts at
    most ``budget`` seconds, else a subset extrapolated (the rules work coordinate-wise)."""
    first, first_ref = synthetic(k, min(d, CHUNK), seed=3)
    chunk_s, _ = _timed(lambda: rule(first, None, first_ref))
    if chunk_s * d / first.shape[1] <= budget:
        updates, ref = synthetic(k, d)
        seconds, _ = _timed(lambda: rule(updates, None, ref))
        return seconds, "all d"
    n = min(d, CHUNK * max(2, math.ceil(budget / 4 / max(chunk_s, 1e-9))))
    part, part_ref = synthetic(k, n, seed=4)
    t, _ = _timed(lambda: rule(part, None, part_ref))
    return t * d / n, f"{n:,} coords, ×{d / n:.0f}"


def measure(k: int, d: int, budget: float, sample: float) -> list[Row]:
    """One cell of the grid: ours (the compiled pass) against the per-coordinate port and
    against the vectorised tensor path (the rule's path off the CPU), extrapolated where
    stated."""
    rule = get_aggregator("reweight")
    vectorised = get_aggregator("reweight", compiled=False)
    probe_n = min(d, 16)
    probe, _ = synthetic(k, probe_n, seed=1)
    per_coord, _ = _timed(lambda: reference_reweight(probe.numpy()))
    n_ref = int(min(d, max(probe_n, sample / max(per_coord / probe_n, 1e-9))))
    sub, sub_ref = synthetic(k, n_ref, seed=2)
    rule(sub[:, : min(n_ref, 64)], None, sub_ref[: min(n_ref, 64)])  # warm-up (compiles the pass once)
    ours_sub = rule(sub, None, sub_ref).aggregate.numpy()
    vec_diff = float(np.abs(ours_sub - vectorised(sub, None, sub_ref).aggregate.numpy()).max())
    ref_s, expected = _timed(lambda: reference_reweight(sub.numpy()))
    diff = float(np.abs(ours_sub - expected).max())
    ours_s, how = _time_rule(rule, k, d, budget)
    vec_s, vec_how = _time_rule(vectorised, k, d, budget)
    baseline = ref_s * d / n_ref
    name = f"reweight K={k}, d={d:,}"
    return [
        Row("aggregate", name, ours_s, "per-coordinate port", baseline, "s",
            note=f"port: {n_ref:,} coords, ×{d / n_ref:,.0f}; ours: {how}; max |Δ| {diff:.1e}",
            extra={"max_abs_difference": diff}),
        Row("aggregate", name + " (compiled vs vectorised)", ours_s, "vectorised tensor path", vec_s, "s",
            note=f"vectorised: {vec_how}; max |Δ| {vec_diff:.1e}", extra={"max_abs_difference": vec_diff}),
    ]  # fmt: skip


def edge_rule(k: int, d: int, compiled: bool):
    """(prepare, measured) for ``bench.isolate``: the rule on K synthetic uploads of d
    coordinates; ``prepare`` builds them and compiles (or loads) the pass on a few."""
    rule = get_aggregator("reweight", compiled=compiled)
    data: dict[str, torch.Tensor] = {}

    def prepare() -> None:
        data["updates"], data["ref"] = synthetic(k, d)
        rule(data["updates"][:, :8], None, data["ref"][:8])

    def measured() -> dict:
        return {"weight_sum": float(rule(data["updates"], None, data["ref"]).weights.sum())}

    return prepare, measured


def memory(k: int = 500, d: int = 21_840) -> Row:
    """Memory the rule's call adds to its process (peak RSS − RSS before the call) at K
    uploads, ours vs the vectorised path, each in its own process; the processes' peaks
    (interpreter, torch and numba included) in ``extra``."""
    ours = run_isolated("bench.aggregate:edge_rule", k=k, d=d, compiled=True)
    vec = run_isolated("bench.aggregate:edge_rule", k=k, d=d, compiled=False)
    mib = 1 << 20
    return Row("aggregate", f"reweight K={k}, d={d:,}: memory of the call", (ours.peak_bytes - ours.before_bytes) / mib,
               "vectorised tensor path", (vec.peak_bytes - vec.before_bytes) / mib, "MiB", kind="less memory",
               note=f"peak RSS of the process {ours.peak_bytes / mib:,.0f} / {vec.peak_bytes / mib:,.0f} MiB; "
                    f"time {ours.seconds:.1f} s / {vec.seconds:.1f} s",
               extra={"peak_mib": ours.peak_bytes / mib, "baseline_peak_mib": vec.peak_bytes / mib})  # fmt: skip


KS, DS = (10, 50, 100), (21_840, 1_200_000, 11_000_000)


def run(
    ks: tuple[int, ...] = KS, ds: tuple[int, ...] = DS, budget: float = 120.0, sample: float = 10.0, edge_k: int = 500
) -> list[Row]:  # fmt: skip
    rows = []
    with progress() as bar:
        task = bar.add_task("aggregate: K × d grid, then memory", total=len(ks) * len(ds) + 1)
        for k in ks:
            for d in ds:
                rows += measure(k, d, budget, sample)
                bar.advance(task)
        if edge_k:
            rows.append(memory(edge_k))
        bar.advance(task)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=list(KS))
    parser.add_argument("--d", type=int, nargs="+", default=list(DS))
    parser.add_argument("--budget", type=float, default=120.0, help="largest full run of ours, seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds of the port per cell")
    parser.add_argument("--edge-k", type=int, default=500, help="uploads of the memory row (0: skip it)")
    args = parser.parse_args()
    rows = run(args.k, args.d, args.budget, args.sample, args.edge_k)
    print_rows(f"residual reweighting, {torch.get_num_threads()} torch thread(s)", rows)


if __name__ == "__main__":
    main()
