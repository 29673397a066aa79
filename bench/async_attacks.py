"""Issue 20's acceptance: under 20 % sign-flip and ALIE attackers, asynchronous BMFL
keeps ≥ 90 % of its clean accuracy. MNIST-5k, ``--vehicles`` vehicles on one
aggregator, 30 % of them 5× slower; BMFL's edge pipeline (self-reliability filter, then
residual reweighting) with the reproduce grid's DP-SGD training (``BMFL_TRAINING``);
FedBuff weighting, S = ``--buffer``, τ_max = ``--tau-max``. Per seed and attack: the
accuracy settled over the last ``--settle`` versions of the clean and the attacked run,
and their ratio (the target is ≥ 0.90).

    python -m bench.async_attacks [--seeds 0 1 2] [--versions 120] [--vehicles 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console

from bmfl.reproduce.grid import BMFL_TRAINING, SELF_RELIABILITY
from bmfl.simulation import SimulationConfig, run_simulation

ATTACKS = {"sign_flip": {}, "alie": {}}
FRACTION = 0.2


def settled(rows, last: int) -> float:
    """Mean accuracy of the last ``last`` versions."""
    tail = [r.accuracy for r in rows[-last:]]
    return sum(tail) / len(tail)


def config(seed: int, args: argparse.Namespace, attack: str | None) -> SimulationConfig:
    return SimulationConfig.model_validate({
        "name": f"async/{attack or 'clean'}/{seed}", "seed": seed, "vehicles": args.vehicles, "edges": 1,
        "rounds": args.versions, "data": {"name": "mnist_5k", "edge_test_samples": 200},
        "training": dict(BMFL_TRAINING), "stragglers": {"kind": "slow_fraction"},
        "aggregation": {"edge": {"name": "reweight"}, "filters": [SELF_RELIABILITY], "cloud": {"name": "fedavg"}},
        "asynchrony": {"mode": "async", "buffer_size": args.buffer, "tau_max": args.tau_max, "weighting": "fedbuff"},
        "attack": {"name": attack, "fraction": FRACTION if attack else 0.0, "options": ATTACKS.get(attack, {})},
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--versions", type=int, default=120)
    ap.add_argument("--vehicles", type=int, default=20)
    ap.add_argument("--buffer", type=int, default=5)
    ap.add_argument("--tau-max", type=int, default=4)
    ap.add_argument("--settle", type=int, default=10)
    args = ap.parse_args()
    quiet = Console(quiet=True)
    ratios: dict[str, list[float]] = {a: [] for a in ATTACKS}
    for seed in args.seeds:
        began = time.process_time()
        clean = settled(run_simulation(config(seed, args, None), quiet).rounds, args.settle)
        line = [f"seed {seed}: clean {clean:.4f}"]
        for attack in ATTACKS:
            attacked = settled(run_simulation(config(seed, args, attack), quiet).rounds, args.settle)
            ratios[attack].append(attacked / clean)
            line.append(f"{attack} {attacked:.4f} (ratio {attacked / clean:.3f})")
        print("; ".join(line) + f"; {time.process_time() - began:.0f} CPU s", flush=True)
    for attack, values in ratios.items():
        spread = f", min {min(values):.3f}, max {max(values):.3f}" if len(values) > 1 else ""
        print(f"{attack}: mean ratio {statistics.fmean(values):.3f}{spread}; ≥ 0.90 on "
              f"{sum(v >= 0.9 for v in values)}/{len(values)} seeds")


if __name__ == "__main__":
    main()
