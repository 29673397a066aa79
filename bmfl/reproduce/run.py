"""Run the grid: every distinct config once (runs whose configs differ only in name
share one simulation), under one rich progress display. Records of an earlier
invocation can be reused for configs that have not changed (``bmfl reproduce --resume``)."""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmfl.data import load_dataset
from bmfl.data.registry import TRAFFIC_SERIES, traffic_standardisation
from bmfl.data.traffic import original_errors
from bmfl.params import load_vector
from bmfl.reproduce.grid import Run
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.runner import initial_model
from bmfl.simulation.output import summary_line

KEPT_FIELDS = (
    "round", "accuracy", "loss", "mae", "attack_success_rate", "trainers", "attackers_selected",
    "attackers_flagged", "honest_flagged", "attacker_weight", "epsilon_max", "upstream_bytes_cloud",
    "upstream_bytes_flat", "bytes_up_vehicles", "bytes_down_vehicles", "bytes_up_edges", "bytes_down_edges",
    "bytes_up_cloud", "bytes_down_cloud", "compute_s_vehicles", "wall_time_s", "sim_time_s",
)


def fingerprint(config: dict[str, Any]) -> str:
    """The config without its name: equal fingerprints run the same simulation."""
    return json.dumps({k: v for k, v in config.items() if k != "name"}, sort_keys=True)


def original_scale(result) -> dict[str, float] | None:
    """RMSE and MAE of a traffic run's final model on the original traffic scale (its
    test set, ``bmfl.data.traffic.original_errors``); None for other data."""
    data = result.config.data
    if data.name not in TRAFFIC_SERIES:
        return None
    _, test = load_dataset(data.name, **data.options)
    model = load_vector(initial_model(result.config), result.final_vector)
    with torch.no_grad():
        predicted = model(test.x)
    rmse, mae = original_errors(predicted, test.y, *traffic_standardisation(data.name, **data.options))
    return {"rmse": rmse, "mae": mae}


def record(result, fp: str, cpu_s: float) -> dict[str, Any]:
    """What the report needs from one run: its per-round metrics, payout outcome, cost
    and, for traffic, its final errors on the original scale."""
    payouts = result.payouts
    paid = sum(payouts.vehicles.values())
    to_attackers = sum(w for v, w in payouts.vehicles.items() if v in set(result.attackers))
    return {
        "data": result.config.data.name,
        "original": original_scale(result),
        "rows": [{k: row[k] for k in KEPT_FIELDS} for row in result.rows()],
        "attackers": result.attackers,
        "payout_share_attackers": to_attackers / paid if paid else 0.0,
        "summary": summary_line(result),
        "cpu_s": cpu_s,
        "fingerprint": fp,
    }


def simulate(key: str, config: dict[str, Any], fp: str) -> dict[str, Any]:
    """One run in a worker process (one torch thread, no display): its record."""
    import torch

    torch.set_num_threads(1)
    cpu = time.process_time()
    result = run_simulation(SimulationConfig.model_validate({**config, "name": key}), Console(quiet=True))
    return record(result, fp, time.process_time() - cpu)


def run_grid(
    runs: list[Run], console: Console, reuse: dict[str, dict[str, Any]] | None = None, jobs: int = 1
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Records by run key, and timing: ``cpu_s`` the grid's cost (CPU seconds summed
    over its distinct runs, reused ones included), ``wall_s`` this invocation's wall
    time, ``reused`` the number of runs taken from ``reuse`` (records by fingerprint).
    ``jobs`` > 1 runs that many simulations at once, each in its own process. Every run
    uses one torch thread, here too: torch's reductions split by thread count, so a
    run's losses would otherwise differ in the last digits between ``jobs`` settings and
    machines (every run is seeded, so the records do not depend on ``jobs``)."""
    done: dict[str, dict[str, Any]] = {}
    todo: dict[str, Run] = {}  # by fingerprint: the first run of each distinct config
    for run in runs:
        fp = fingerprint(run.config)
        if reuse and fp in reuse:
            done[fp] = reuse[fp]
        else:
            todo.setdefault(fp, run)
    reused = len(done)
    start = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("grid", total=len(runs), completed=sum(fingerprint(r.config) in done for r in runs))

        def finished(fp: str, rec: dict[str, Any]) -> None:
            done[fp] = rec
            console.print(rec["summary"])
            progress.advance(overall, sum(1 for run in runs if fingerprint(run.config) == fp))

        if jobs <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for fp, run in todo.items():
                    config = SimulationConfig.model_validate({**run.config, "name": run.key})
                    cpu = time.process_time()
                    result = run_simulation(config, console, progress=progress)
                    finished(fp, record(result, fp, time.process_time() - cpu))
            finally:
                torch.set_num_threads(threads)
        else:
            context = multiprocessing.get_context("spawn")  # no forked torch thread pools
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = {pool.submit(simulate, run.key, run.config, fp): fp for fp, run in todo.items()}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    records = {run.key: done[fingerprint(run.config)] for run in runs}
    timing = {"cpu_s": sum(r["cpu_s"] for r in done.values()), "wall_s": time.perf_counter() - start, "reused": reused}
    return records, timing
