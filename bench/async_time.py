"""Asynchronous vs synchronous rounds on the simulated wall clock (issue 20): MNIST-5k,
20 vehicles on one aggregator, 30 % of them 5× slower (``stragglers.kind =
"slow_fraction"``), the platform's default edge pipeline (``AggregationSpec()``) and
DP-SGD. Per seed: the sync run's final accuracy A is the target; the
async run (FedBuff weighting, S = ``--buffer``, τ_max = ``--tau-max``) stops once it
reaches A. Printed: simulated seconds to A for both and the ratio async / sync.

    python -m bench.async_time [--seeds 0 1] [--rounds 8] [--buffer 5] [--tau-max 4]
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from bmfl.simulation import SimulationConfig, run_simulation


def time_to(rows, target: float) -> float | None:
    """Simulated seconds of the first update whose accuracy reaches ``target``."""
    return next((r.sim_time_s for r in rows if (r.accuracy or 0.0) >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--buffer", type=int, default=5)
    ap.add_argument("--tau-max", type=int, default=4)
    ap.add_argument("--weighting", default="fedbuff")
    args = ap.parse_args()
    base = {
        "vehicles": 20, "edges": 1, "rounds": args.rounds, "data": {"name": "mnist_5k"},
        "training": {"epochs": 1}, "stragglers": {"kind": "slow_fraction"},
    }  # fmt: skip
    quiet = Console(quiet=True)
    for seed in args.seeds:
        sync = run_simulation(SimulationConfig.model_validate({**base, "seed": seed, "name": "sync"}), quiet)
        target = sync.final.accuracy
        asynchronous = run_simulation(SimulationConfig.model_validate({
            **base, "seed": seed, "name": "async", "rounds": args.rounds * 20, "target_accuracy": target,
            "asynchrony": {"mode": "async", "buffer_size": args.buffer, "tau_max": args.tau_max,
                           "weighting": args.weighting},
        }), quiet)  # fmt: skip
        t_sync, t_async = time_to(sync.rounds, target), time_to(asynchronous.rounds, target)
        ratio = f"{t_async / t_sync:.2f}" if t_async is not None else "not reached"
        refused = sum(r.stale_refused for r in asynchronous.rounds)
        reports = sum(r.trainers for r in asynchronous.rounds)
        print(
            f"seed {seed}: target {target:.4f} (sync final, {len(sync.rounds)} rounds); sync {t_sync:.2f} s; "
            f"async {t_async if t_async is None else round(t_async, 2)} s after {len(asynchronous.rounds)} updates "
            f"(best {max(r.accuracy for r in asynchronous.rounds):.4f}, stale refused {refused}/{reports}); "
            f"async/sync {ratio}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
