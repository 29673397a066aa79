"""One BMFL round (``bench.workload``: 50 vehicles, the 21,840-parameter CNN, E = 5,
B = 64, DP-SGD, self-reliability filter + residual reweighting at 5 edges, consensus
accuracy, cloud FedAvg): ours (``bmfl.training.fleet`` + the batched evaluator) vs a
plain sequential PyTorch loop vs Flower's simulation of the same round, in one run; and
the floor under all of them (``bench.workload.training_floor``: the training alone,
without DP), which bounds the speed-up over Flower reachable on PyTorch's CPU kernels here.

Each contender runs in its own fresh process (``bench.isolate``: its time and memory
are its own), ours, the plain loop and the floor ``--repeats`` times alternately, Flower once
after the first pair; each process builds the workload and warms up on one edge's worth
of vehicles untimed. Flower runs 2 rounds (its first also starts Ray's actors and loads
their data), and its second round is the one compared; its whole run is shown too.
Memory is the peak resident memory of the contender's process tree (Ray's processes
included). All three must compute the same w^1 (max |difference| shown). Flower is
skipped with a message when ``flwr[simulation]`` is not installed.

    python -m bench.fleet_round [--vehicles 50 --epochs 5 --repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from bench import flower_round
from bench.common import Row, console, median, print_rows, progress
from bench.isolate import Isolated, run_isolated
from bench.workload import PER_EDGE, build, ours_round, plain_round, training_floor

MIB = 2**20


def contender(
    name: str, vehicles: int, epochs: int, partition: str, test_samples: int | None, flower_rounds: int, threads: int
):
    """``bench.isolate`` target: build the workload (and warm up on one edge's worth of
    vehicles) untimed, then run one round of contender ``name`` ("ours", "plain",
    "floor" or "flower"); returns w¹ (and Flower's round times)."""
    torch.set_num_threads(threads)
    state: dict = {}

    def prepare() -> None:
        state["w"] = build(vehicles, epochs, partition=partition, test_samples=test_samples)
        if name != "flower":
            ROUNDS[name](build(PER_EDGE, 1, partition=partition, test_samples=test_samples))

    def measured() -> dict:
        if name != "flower":
            return {"w1": ROUNDS[name](state["w"]).tolist()}
        run = flower_round.run(vehicles, epochs, rounds=flower_rounds, partition=partition, test_samples=test_samples)
        return {"w1": run.first_global.tolist(), "round_s": run.round_s, "total_s": run.total_s}

    return prepare, measured


ROUNDS = {"ours": ours_round, "plain": plain_round, "floor": training_floor}


def run(
    vehicles: int = 50, epochs: int = 5, repeats: int = 5, partition: str = "dirichlet", test_samples: int | None = None,
    flower_rounds: int = 2, bench: str = "fleet_round",
) -> list[Row]:
    """Rows: wall time and peak memory, ours vs the plain loop and vs Flower (its last
    of ``flower_rounds`` rounds)."""
    setting = {"vehicles": vehicles, "epochs": epochs, "partition": partition, "test_samples": test_samples,
               "flower_rounds": flower_rounds, "threads": torch.get_num_threads()}  # fmt: skip
    runs: dict[str, list[Isolated]] = {"ours": [], "plain": [], "floor": [], "flower": []}
    why_not = flower_round.missing()
    with progress() as bar:
        task = bar.add_task(f"{bench}: {vehicles} vehicles, ours / plain / floor / Flower", total=3 * repeats + (why_not is None))
        for r in range(repeats):
            for name in ("ours", "plain", "floor") if r or why_not else ("ours", "plain", "floor", "flower"):
                runs[name].append(run_isolated("bench.fleet_round:contender", name=name, **setting))
                bar.advance(task)
    ours, plain, floor = (median([i.seconds for i in runs[n]]) for n in ("ours", "plain", "floor"))
    ours_mem, plain_mem = (max(i.peak_bytes for i in runs[n]) / MIB for n in ("ours", "plain"))
    w1 = {n: torch.tensor(runs[n][0].result["w1"]) for n in ("ours", "plain", "flower") if runs[n]}
    before = f"RSS before the round: ours {runs['ours'][0].before_bytes / MIB:.0f} MiB, plain {runs['plain'][0].before_bytes / MIB:.0f} MiB"
    each = "; ".join(f"{n} " + ", ".join(f"{i.seconds:.1f}" for i in runs[n]) + " s" for n in ("ours", "plain"))
    setting_note = f"{vehicles} vehicles, E = {epochs}, median of {repeats} ({each}), each in its own process"
    rows = [
        Row(bench, "round wall time vs plain loop", ours, "plain sequential PyTorch loop", plain, "s",
            note=f"{setting_note}; max |w¹ ours − plain| {float((w1['ours'] - w1['plain']).abs().max()):.1e}"),
        Row(bench, "round peak memory vs plain loop", ours_mem, "plain sequential PyTorch loop", plain_mem, "MiB",
            "less memory", note=f"peak RSS of the process (interpreter, torch and data included); {before}"),
        Row(bench, "round wall time vs its non-private training floor", ours, "training floor (no DP, nothing else)",
            floor, "s", "overhead", note=f"floor median of {repeats} ({', '.join(f'{i.seconds:.1f}' for i in runs['floor'])} s)"),
    ]  # fmt: skip
    if why_not is not None:
        console.print(f"[yellow]Flower skipped[/]: {why_not}")
        rows.append(Row(bench, "round wall time vs Flower", ours, "Flower simulation", None, "s", note=f"skipped: {why_not}"))
        return rows
    flower = runs["flower"][0]
    round_s = flower.result["round_s"]
    rows += [
        Row(bench, "round wall time vs Flower", ours, f"Flower simulation (round {flower_rounds})", round_s[-1], "s",
            note=f"Flower rounds {', '.join(f'{s:.1f}' for s in round_s)} s, whole run {flower.result['total_s']:.1f} s "
                 f"(Ray start-up included); max |w¹ Flower − plain| {float((w1['flower'] - w1['plain']).abs().max()):.1e}"),
        Row(bench, "non-private training alone vs Flower", floor, f"Flower simulation (round {flower_rounds})", round_s[-1],
            "s", note="the bound below any round of this workload here: the vehicles' training without DP, filter, "
                      "evaluation or aggregation (plain torch.optim, same batch count), median of "
                      f"{repeats} ({', '.join(f'{i.seconds:.1f}' for i in runs['floor'])} s); a round ≥ 5× faster "
                      f"than Flower would take ≤ {round_s[-1] / 5:.1f} s"),
        Row(bench, "round peak memory vs Flower", ours_mem, "Flower simulation", flower.peak_bytes / MIB, "MiB",
            "less memory", note="peak RSS of the process tree (Ray's processes included)"),
    ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print_rows(f"one BMFL round, {torch.get_num_threads()} torch thread(s)", run(args.vehicles, args.epochs, args.repeats))


if __name__ == "__main__":
    main()
