"""The GPU column (issue 24): the same work on this machine's GPU and on its CPU, in one
run, through the one device choice (``bmfl.device``): one BMFL round of the fleet_round
workload (50 vehicles, DP-SGD, self-reliability filter, residual reweighting at 5 edges,
consensus, cloud FedAvg) split into the vehicles' training and the edges' work, against
the non-private training floor on the same device; a 1,000-vehicle round; scoring 51 models on the 2,000-image
test set; residual reweighting at K = 10, d = 11 M and K = 100, d = 1.2 M (the CPU's
compiled pass on one thread). Both devices must give the same verdicts (the round's
w¹ and the reweighting's weights are compared). It needs a GPU; ``make bench`` runs it
where torch sees one and otherwise shows the last GPU run's table
(``docs/performance_gpu.json``).

    python -m bench.gpu [--vehicles 50 --repeats 3 --out docs/performance_gpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.aggregate import synthetic
from bench.common import Row, machine, median, print_rows, progress
from bench.workload import Workload, aggregate, build
from bmfl.aggregation import get_aggregator
from bmfl.device import using
from bmfl.filters.self_reliability import batched_accuracy_evaluator
from bmfl.params import flatten
from bmfl.training.fleet import train_fleet

OUT = Path("docs/performance_gpu.json")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``fn`` over ``repeats`` calls after one untimed warm-up,
    the device synchronised around each; and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return median(times), out


def train(w: Workload, device: torch.device) -> torch.Tensor:
    """The vehicles' DP-SGD round (``train_fleet``) on ``device``; uploads on the CPU."""
    model = copy.deepcopy(w.model).to(device)
    results = train_fleet(
        model, w.datasets, w.config, [w.generator(v) for v in range(len(w.datasets))],
        [w.engine() for _ in w.datasets], record_losses=False,
    )  # fmt: skip
    return torch.stack([flatten(r.state).cpu() for r in results])


def edges(w: Workload, uploads: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The edges' filter, reweighting and consensus and the cloud's FedAvg, scoring and
    reweighting on ``device``; returns w¹."""
    with using(device):
        scorer = batched_accuracy_evaluator(copy.deepcopy(w.model).to(device), w.test.to(device))
        return aggregate(w, uploads, w.reference, scorer)[0]


def floor(w: Workload, device: torch.device) -> None:
    """``bench.workload.training_floor`` on ``device``: the same vehicles' training
    without DP, one vehicle after another with ``torch.optim``."""
    for v, data in enumerate(w.datasets):
        net = copy.deepcopy(w.model).to(device)
        x, y = data.x.to(device), data.y.to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=w.config.lr, momentum=w.config.momentum)
        generator, n, b = w.generator(v), len(data), w.config.batch_size
        for _ in range(w.config.epochs * math.ceil(n / b)):
            idx = torch.nonzero(torch.rand(n, generator=generator) < min(1.0, b / n)).flatten().to(device)
            optimizer.zero_grad()
            (F.cross_entropy(net(x[idx]), y[idx], reduction="sum") / b).backward()
            optimizer.step()


def round_rows(w: Workload, gpu: torch.device, repeats: int) -> list[Row]:
    cpu = torch.device("cpu")
    timings = {}
    for name, device in (("gpu", gpu), ("cpu", cpu)):
        t_train, uploads = _seconds(lambda: train(w, device), device, repeats)
        t_edges, model = _seconds(lambda: edges(w, uploads, device), device, repeats)
        t_floor, _ = _seconds(lambda: floor(w, device), device, repeats)
        timings[name] = (t_train, t_edges, t_floor, uploads, model)
    (g_train, g_edges, g_floor, g_up, g_model), (c_train, c_edges, c_floor, c_up, c_model) = timings["gpu"], timings["cpu"]
    same = f"max |w¹ GPU − w¹ CPU| {float((g_model - c_model).abs().max()):.1e}, uploads {float((g_up - c_up).abs().max()):.1e}"
    note = f"{len(w.datasets)} vehicles, E = {w.config.epochs}, median of {repeats}; {same}"
    return [
        Row("gpu", "round on the GPU vs on the CPU", g_train + g_edges, "the same round on the CPU", c_train + c_edges, "s",
            note=note),
        Row("gpu", "round on the GPU vs its non-private training floor on the GPU", g_train + g_edges, "floor on the GPU",
            g_floor, "s", "overhead", note=note),
        Row("gpu", "vehicles' DP-SGD training: GPU vs CPU", g_train, "CPU", c_train, "s", note=note),
        Row("gpu", "edges' filter, scoring, reweighting, consensus: GPU vs CPU", g_edges, "CPU", c_edges, "s", note=note),
        Row("gpu", "round on the CPU vs its floor on the CPU", c_train + c_edges, "floor on the CPU", c_floor, "s", "overhead",
            note=note),
    ]  # fmt: skip


def fleet_row(gpu: torch.device, vehicles: int = 1_000, test_samples: int = 500) -> Row:
    """A round of ``vehicles`` vehicles (E = 1, equal IID shares, edges of 10, the first
    ``test_samples`` test images), where the GPU's stacked steps hold many vehicles
    each: one timed round per device after a warm-up."""
    w = build(vehicles, epochs=1, partition="iid", test_samples=test_samples)
    times, models = {}, {}
    for device in (gpu, torch.device("cpu")):
        times[device.type], models[device.type] = _seconds(lambda: edges(w, train(w, device), device), device, 1)
    gap = float((models["cuda"] - models["cpu"]).abs().max())
    return Row("gpu", f"{vehicles:,}-vehicle round (E = 1): GPU vs CPU", times["cuda"], "CPU", times["cpu"], "s",
               note=f"{vehicles // 10} edges, {test_samples} test images; one timed round each; "
               f"max |w¹ GPU − w¹ CPU| {gap:.1e}")  # fmt: skip


def scoring_row(w: Workload, gpu: torch.device, repeats: int) -> Row:
    g = torch.Generator().manual_seed(1)
    vectors = w.reference + 0.01 * torch.randn(51, w.reference.numel(), generator=g)
    times, scores = {}, {}
    for device in (gpu, torch.device("cpu")):
        model, test = copy.deepcopy(w.model).to(device), w.test.to(device)
        # a fresh evaluator per call: its memo would answer repeated vectors for free
        times[device.type], scores[device.type] = _seconds(
            lambda: batched_accuracy_evaluator(model, test)(vectors), device, repeats
        )  # fmt: skip
    differ = int((scores["cuda"] != scores["cpu"]).sum())
    return Row("gpu", "scoring 51 models on 2,000 test images: GPU vs CPU", times["cuda"], "CPU", times["cpu"], "s",
               note=f"accuracies that differ between the devices: {differ} of 51; median of {repeats}")  # fmt: skip


def reweight_rows(gpu: torch.device, repeats: int) -> list[Row]:
    rows = []
    rule = get_aggregator("reweight")
    for k, d in ((10, 11_000_000), (100, 1_200_000)):
        updates, ref = synthetic(k, d)
        sizes = torch.ones(k)
        with using(gpu):
            t_gpu, on_gpu = _seconds(lambda: rule(updates, sizes, ref), gpu, repeats)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with using("cpu"):
            t_cpu, on_cpu = _seconds(lambda: rule(updates, sizes, ref), torch.device("cpu"), 1)
        torch.set_num_threads(threads)
        gap = float((on_gpu.weights - on_cpu.weights).abs().max())
        rows.append(Row("gpu", f"reweighting K = {k}, d = {d / 1e6:g} M: GPU vs the CPU's compiled pass (1 thread)", t_gpu,
                        "CPU", t_cpu, "s", note=f"max |weight GPU − weight CPU| {gap:.1e}; GPU median of {repeats}"))  # fmt: skip
    return rows


def run(vehicles: int = 50, repeats: int = 3) -> list[Row]:
    if not torch.cuda.is_available():
        raise RuntimeError("bench.gpu needs a GPU: torch sees none")
    gpu = torch.device("cuda")
    w = build(vehicles)
    with progress() as bar:
        task = bar.add_task("gpu: rounds, scoring, reweighting", total=4)
        rows = round_rows(w, gpu, repeats)
        bar.advance(task)
        rows.append(fleet_row(gpu))
        bar.advance(task)
        rows.append(scoring_row(w, gpu, repeats))
        bar.advance(task)
        rows += reweight_rows(gpu, repeats)
        bar.advance(task)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    measure_and_store(args.out, args.vehicles, args.repeats)


def measure_and_store(out: Path, vehicles: int = 50, repeats: int = 3) -> dict:
    """:func:`run`, printed and kept in ``out`` with the machine it ran on (the GPU
    machine is rarely the one the other benchmarks run on)."""
    started, load = time.strftime("%Y-%m-%d %H:%M %Z"), " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = run(vehicles, repeats)
    print_rows(f"GPU vs CPU, {torch.cuda.get_device_name(0)}", rows)
    record = {"machine": machine(), "started": started, "load": load, "rows": [asdict(r) for r in rows]}
    out.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
