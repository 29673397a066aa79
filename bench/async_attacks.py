"""Issue 20's acceptance: under 20 % sign-flip and ALIE attackers, asynchronous BMFL
keeps ≥ 90 % of its clean accuracy. MNIST-5k, ``--vehicles`` vehicles on one
aggregator, 30 % of them 5× slower; each of ``--pipelines`` (labels of
``bmfl.reproduce.robustness.pipelines``: ``BMFL`` is the self-reliability filter, then
residual reweighting; ``Envelope+BMFL`` puts the DP-SGD envelope filter before them)
with the reproduce grid's DP-SGD training (``BMFL_TRAINING``);
FedBuff weighting, S = ``--buffer``, τ_max = ``--tau-max``. Per seed and attack: the
accuracy settled over the last ``--settle`` versions of the clean and the attacked run,
and their ratio (the target is ≥ 0.90).

    python -m bench.async_attacks [--seeds 0 1 2] [--versions 120] [--vehicles 20] [--pipelines BMFL Envelope+BMFL]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console

from bmfl.reproduce.grid import BMFL_TRAINING
from bmfl.reproduce.robustness import pipelines
from bmfl.simulation import SimulationConfig, run_simulation

ATTACKS = {"sign_flip": {}, "alie": {}}
FRACTION = 0.2
TEST_SAMPLES = 200


def settled(rows, last: int) -> float:
    """Mean accuracy of the last ``last`` versions."""
    tail = [r.accuracy for r in rows[-last:]]
    return sum(tail) / len(tail)


def config(seed: int, args: argparse.Namespace, pipeline: str, attack: str | None) -> SimulationConfig:
    return SimulationConfig.model_validate({
        "name": f"async/{pipeline}/{attack or 'clean'}/{seed}", "seed": seed, "vehicles": args.vehicles, "edges": 1,
        "rounds": args.versions, "data": {"name": "mnist_5k", "edge_test_samples": TEST_SAMPLES},
        "training": dict(BMFL_TRAINING), "stragglers": {"kind": "slow_fraction"},
        "aggregation": {**pipelines(TEST_SAMPLES)[pipeline], "cloud": {"name": "fedavg"}},
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
    ap.add_argument("--pipelines", nargs="+", default=["BMFL", "Envelope+BMFL"], choices=sorted(pipelines(TEST_SAMPLES)))
    args = ap.parse_args()
    quiet = Console(quiet=True)
    ratios: dict[tuple[str, str], list[float]] = {(p, a): [] for p in args.pipelines for a in ATTACKS}
    for seed in args.seeds:
        for pipeline in args.pipelines:
            began = time.process_time()
            clean = settled(run_simulation(config(seed, args, pipeline, None), quiet).rounds, args.settle)
            line = [f"seed {seed}, {pipeline}: clean {clean:.4f}"]
            for attack in ATTACKS:
                result = run_simulation(config(seed, args, pipeline, attack), quiet)
                attacked = settled(result.rounds, args.settle)
                ratios[pipeline, attack].append(attacked / clean)
                honest = sum(r.honest_flagged for r in result.rounds)
                line.append(f"{attack} {attacked:.4f} (ratio {attacked / clean:.3f}, honest flagged {honest})")
            print("; ".join(line) + f"; {time.process_time() - began:.0f} CPU s", flush=True)
    for (pipeline, attack), values in ratios.items():
        spread = f", min {min(values):.3f}, max {max(values):.3f}" if len(values) > 1 else ""
        print(f"{pipeline}, {attack}: mean ratio {statistics.fmean(values):.3f}{spread}; ≥ 0.90 on "
              f"{sum(v >= 0.9 for v in values)}/{len(values)} seeds")


if __name__ == "__main__":
    main()
