"""Peak memory of a 1,000-vehicle simulation: one BMFL round (``bench.workload``) with
1,000 vehicles holding 8 MNIST images each (IID: Dirichlet(0.9) cannot give 1,000
vehicles enough images), E = 1, 100 edges of 10, the first 500 test images as the
publisher's test set: ours vs the plain sequential loop vs Flower's simulation (one
round), each in its own process: peak resident memory of the process tree, with the
wall times alongside (``bench.fleet_round`` measures both).

    python -m bench.memory [--vehicles 1000]
"""

from __future__ import annotations

import argparse

import torch

from bench import fleet_round
from bench.common import Row, print_rows


def run(vehicles: int = 1000) -> list[Row]:
    rows = fleet_round.run(
        vehicles, epochs=1, repeats=1, partition="iid", test_samples=500, flower_rounds=1, bench="memory"
    )  # fmt: skip
    return sorted(rows, key=lambda r: r.unit != "MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    args = parser.parse_args()
    print_rows(f"{args.vehicles}-vehicle simulation, {torch.get_num_threads()} torch thread(s)", run(args.vehicles))


if __name__ == "__main__":
    main()
