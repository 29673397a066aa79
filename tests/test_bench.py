"""The benchmarks' own correctness: baselines compute what ours computes, the report
checks the targets against the measured rows, memory sampling sees allocations. No
timing is asserted."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

from bench.aggregate import measure, memory, reference_reweight, synthetic  # noqa: E402
from bench.common import Row, TreePeak  # noqa: E402
from bench.isolate import run_isolated  # noqa: E402
from bench.run_all import Section, acceptance, render  # noqa: E402
from bench.workload import plain_dp_sgd  # noqa: E402
from bmfl.aggregation import get_aggregator  # noqa: E402
from bmfl.data import TensorData  # noqa: E402
from bmfl.models import create_model  # noqa: E402
from bmfl.params import flatten  # noqa: E402
from bmfl.privacy import PrivacyAccountant  # noqa: E402
from bmfl.training import LocalTrainingConfig, train_local  # noqa: E402


def test_per_coordinate_port_equals_the_vectorised_rule():
    for k, d in ((10, 80), (7, 50)):
        updates, ref = synthetic(k, d, seed=k)
        ours = get_aggregator("reweight")(updates, None, ref).aggregate.numpy()
        assert np.allclose(ours, reference_reweight(updates.numpy()), atol=1e-6)


def test_an_aggregate_cell_checks_both_on_the_same_coordinates():
    port, vectorised = measure(5, 300, budget=1e9, sample=0.05)
    for row in (port, vectorised):
        assert row.extra["max_abs_difference"] < 1e-6 and row.ours > 0 and row.baseline > 0
    assert port.ours == vectorised.ours  # one timing of ours, two baselines


def test_plain_loop_trains_the_same_model_as_train_local():
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(50, 1, 28, 28, generator=g), torch.randint(0, 10, (50,), generator=g), 10)
    config = LocalTrainingConfig(epochs=2, batch_size=16)
    model = create_model("bmfl_cnn")
    accountant = PrivacyAccountant(1e-5)
    plain = plain_dp_sgd(model, data, config, torch.Generator().manual_seed(3), accountant)
    result = train_local(copy.deepcopy(model), data, config, torch.Generator().manual_seed(3))
    assert torch.allclose(plain, flatten(result.state), atol=1e-5)
    assert accountant.steps == result.steps == 8


def test_ratios_and_acceptance_come_from_the_measured_rows():
    rows = [
        Row("fleet_round", "round wall time vs Flower", 2.0, "Flower", 12.0, "s"),
        Row("round_overhead", "one round: full stack vs in-process", 13.0, "in-process", 10.0, "s", "overhead"),
        Row("dp_step", "DP-SGD step vs Opacus", 9.0, "Opacus", 8.0, "ms"),
        Row("intake", "verified uploads into one edge, binary", 240.0, "sink", 280.0, "uploads/s", "throughput"),
    ]
    assert rows[0].ratio == 6.0 and rows[1].ratio == 1.3
    text = "\n".join(acceptance(rows))
    assert "- intake (binary): 240.0 uploads/s verified vs 280.0 uploads/s" in text
    assert "**0.86×** (target ≥ 0.8×: met; ≥ 250 uploads/s: not met" in text
    assert "- intake (multipart): not measured" in text
    assert "**6.00×** faster (target ≥ 2.5×: met)" in text
    assert "**1.30×** in wall time (target ≤ 1.15×: not met)." in text
    assert "target ours ≤ Opacus: not met" in text
    assert "- fleet_round vs its training floor: not measured" in text and "- dp_step vs a non-private step: not measured" in text
    short = [Row("fleet_round", "round wall time vs Flower", 8.0, "Flower", 12.0, "s"),
             Row("fleet_round", "round wall time vs its non-private training floor", 8.0, "floor", 4.0, "s", "overhead"),
             Row("dp_step", "DP-SGD step vs a non-private step", 6.0, "non-private SGD", 5.0, "ms", "overhead")]
    text = "\n".join(acceptance(short))
    assert "**1.50×** faster (target ≥ 2.5×: not met, short by 1.7×)" in text
    assert "ours 8.000 s vs the non-private training floor 4.000 s per round: **2.00×** (target ≤ 1.5×: not met)" in text
    assert "ours 6.000 ms vs a non-private step 5.000 ms: **1.20×** (target ≤ 1.25×: met)" in text
    scale = acceptance([Row("ray_scale", "Ray backend: 2 workers vs 1", 6.0, "1 Ray worker", 4.0, "vehicles/s", "throughput"),
                        Row("ray_scale", "10,000-vehicle round in-process: peak memory vs target", 647.0, "4 GiB target",
                            4096.0, "MiB", "less memory")])  # fmt: skip
    assert "**1.50×** the throughput with 2 workers over 1 (target ≥ 1.6×: not met" in scale[-2]
    assert scale[-1] == "- 10,000-vehicle round in-process: peak 647.0 MiB (target ≤ 4 GiB: met)."
    text = render({"CPU": "test CPU"}, [Section("dp_step", "doc", rows[2:], 1.0, "now", "0 / 0 / 0")])
    assert "| test CPU |" in text and "| DP-SGD step vs Opacus | 9.000 ms | Opacus: 8.000 ms | 0.89× speed-up |" in text


def test_the_gpu_run_is_reported_with_its_own_machine():
    rows = [Row("gpu", "round on the GPU vs on the CPU", 1.0, "the same round on the CPU", 4.0, "s"),
            Row("gpu", "round on the GPU vs its non-private training floor on the GPU", 1.0, "floor on the GPU", 2.0, "s",
                "overhead")]  # fmt: skip
    record = {"machine": {"GPU": "Test GPU", "cores": "16"}, "started": "then", "load": "1 / 1 / 1",
              "rows": [vars(r) for r in rows]}  # fmt: skip
    text = render({"CPU": "test CPU"}, [], record)
    assert ("- GPU (Test GPU, then): a round 1.000 s, **4.00×** faster than the same round on that machine's 16-core "
            "CPU and 0.50× the non-private training floor on the GPU") in text  # fmt: skip
    assert "| GPU | Test GPU |" in text and "| round on the GPU vs on the CPU | 1.000 s |" in text.split("## gpu")[1]
    assert "## gpu" not in render({"CPU": "test CPU"}, [])


def test_reweight_targets_are_checked_against_their_rows():
    vs = "vectorised tensor path"
    rows = [
        Row("aggregate", "reweight K=10, d=11,000,000 (compiled vs vectorised)", 2.5, vs, 25.0, "s"),
        Row("aggregate", "reweight K=100, d=1,200,000 (compiled vs vectorised)", 31.0, vs, 217.0, "s"),
        Row("aggregate", "reweight K=500, d=21,840: memory of the call", 80.0, vs, 160.0, "MiB", "less memory",
            extra={"peak_mib": 700.0, "baseline_peak_mib": 600.0}),
    ]
    text = "\n".join(acceptance(rows))
    assert "K = 10, d = 11,000,000: 2.500 s on one thread, 10.0× the vectorised path (target ≤ 3 s: met)" in text
    assert "K = 100, d = 1,200,000: 31.0 s on one thread, 7.0× the vectorised path (target ≤ 30 s: not met)" in text
    assert "the call adds 80.0 MiB (2.0× less than the vectorised path), its process peaks at 700.0 MiB (target ≤ 2 GiB: met" in text


def test_the_memory_row_runs_each_path_in_its_own_process():
    row = memory(k=5, d=300)
    assert row.unit == "MiB" and row.kind == "less memory" and row.extra["peak_mib"] > row.ours >= 0
    assert row.case == "reweight K=5, d=300: memory of the call" and row.extra["baseline_peak_mib"] > 0


def allocating(mib: int):
    """An isolate target: nothing to prepare, then touch ``mib`` MiB."""

    def measured() -> dict:
        block = torch.ones(mib * 2**20 // 4)
        return {"sum": float(block.add_(1).sum())}

    return (lambda: None), measured


def test_an_isolated_run_reports_its_own_memory_and_result():
    small, large = (run_isolated("tests.test_bench:allocating", mib=m) for m in (1, 200))
    assert large.result == {"sum": 2.0 * 200 * 2**20 // 4}
    assert large.peak_bytes - small.peak_bytes > 150 * 2**20
    assert large.before_bytes > 0 and large.seconds > 0


def test_the_tree_peak_counts_a_grandchild_born_after_the_first_sample():
    """The members are listed again every ``rescan_s``, so a process that a contender
    starts later (a Ray worker) is counted; between rescans only sizes are read."""
    grandchild = "import time; x = b'1' * (200 * 2**20); time.sleep(1.5)"
    child = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; time.sleep(0.3); "
                              f"subprocess.run([sys.executable, '-c', {grandchild!r}])"])  # fmt: skip
    tree = TreePeak(child.pid, rescan_s=0.1)
    while child.poll() is None:
        tree.sample()
        time.sleep(0.02)
    assert tree.peak > 200 * 2**20


def test_every_benchmark_runs_with_its_defaults():
    import importlib
    import inspect

    from bench.run_all import BENCHES

    for name in BENCHES:
        params = inspect.signature(importlib.import_module(f"bench.{name}").run).parameters.values()
        assert all(p.default is not inspect.Parameter.empty for p in params), name
