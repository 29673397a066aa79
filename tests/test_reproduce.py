"""``bmfl reproduce``: the grid, the report computed from the records (including an
honest miss), and the quick grid end to end (slow)."""

import pytest
from rich.console import Console

from bmfl.reproduce.grid import FULL, QUICK, Run, grid
from bmfl.reproduce.report import read_records, write_report
from bmfl.reproduce.run import fingerprint, run_grid
from bmfl.simulation import SimulationConfig

SECTIONS = ("## BMFL Fig. 5", "## BMFL Fig. 6", "### Acceptance", "## BMFL Fig. 7", "## FBFL",
            "## `001`", "## FedAuxHMTL", "## BAFDP", "## Setting and deviations", "## Our numbers against the papers' claims")


@pytest.mark.parametrize("scale", [QUICK, FULL], ids=["quick", "full"])
def test_every_run_of_the_grid_is_a_valid_config(scale):
    runs = grid(scale)
    for run in runs:
        SimulationConfig.model_validate(run.config)
    keys = {r.key for r in runs}
    assert {"fig5/dp/BMFL", "fig5/no_dp/FedAvg", "fig6/same_value/0.6/BMFL", "fig6/ideal/0.6", "fig7/BMFL",
            "fbfl/rules/non-IID/random pick", "fbfl/attacks/label flipping/Krum",
            "traffic/attack + AD/Multi-Krum", "fedaux/FedAuxHMTL", "fedaux/FedAvg", "bafdp/async/L1 sign (BAFDP)/seed 0",
            "bafdp/sync/BMFL (reweight)/seed 1", "bafdp/privacy/1/seed 1"} <= keys
    last = scale.bafdp_seeds - 1
    assert {f"bafdp/{a}/{f:g}/median/seed {last}" for a in ("sign_flip", "gaussian") for f in scale.bafdp_fractions} <= keys
    # identical settings reached from two sections run once
    assert fingerprint(next(r.config for r in runs if r.key == "fbfl/epochs/1")) == fingerprint(
        next(r.config for r in runs if r.key == "fbfl/rules/IID/FedAvg"))


def test_full_grid_is_the_papers_setting_where_it_matters():
    runs = {r.key: r.config for r in grid(FULL)}
    bmfl = runs["fig6/sign_flip/0.6/BMFL"]
    assert (bmfl["vehicles"], bmfl["edges"], bmfl["data"]["name"]) == (50, 5, "mnist")
    assert bmfl["partition"]["kind"] == "complete_non_iid" and bmfl["training"]["dp"]
    assert bmfl["aggregation"]["filters"] == [{"name": "self_reliability", "options": {"tolerance": 1.0}}]
    assert runs["fig7/FedAvg"]["rounds"] == 50 and runs["fig7/FedAvg"]["partition"]["options"] == {"alpha": 0.9}
    traffic = runs["traffic/attack/Multi-Krum"]
    assert traffic["vehicles"] == 100 and round(traffic["fraction"] * traffic["vehicles"]) == 10


def _fake_records(scale, bmfl_at_60):
    """Records with chosen final accuracies: clean 0.8, FedAvg under attack 0.1, BMFL at
    60 % ``bmfl_at_60``, everything else 0.7."""
    records = {}
    for run in grid(scale):
        key, rounds = run.key, run.config["rounds"]
        acc = 0.7
        if key.startswith("fig5/"):
            acc = 0.8
        elif key.startswith("fig6/") and key.endswith("/FedAvg"):
            acc = 0.1
        elif key.startswith("fig6/") and "/0.6/BMFL" in key:
            acc = bmfl_at_60
        traffic = key.startswith(("traffic/", "bafdp/"))
        rows = [{
            "round": r, "accuracy": None if traffic else acc, "loss": 0.5 if traffic else 1.0, "mae": 0.4 if traffic else None,
            "attack_success_rate": 0.05 if key.startswith("fig7/") else None, "trainers": 10, "attackers_selected": 2,
            "attackers_flagged": 2, "honest_flagged": 0, "attacker_weight": 0.0, "epsilon_max": 3.0,
            "upstream_bytes_cloud": 1, "upstream_bytes_flat": 5, "wall_time_s": 0.1, "sim_time_s": float(r),
        } for r in range(1, rounds + 1)]
        original = {"rmse": 0.3, "mae": 0.2} if traffic else None
        records[key] = {"original": original, "rows": rows, "attackers": [0, 1], "payout_share_attackers": 0.0, "summary": key,
                        "cpu_s": 1.0, "fingerprint": fingerprint(run.config)}
    return records


@pytest.mark.parametrize("bmfl_at_60, verdict", [(0.5, "**MISSED**"), (0.76, "met")])
def test_report_states_the_acceptance_verdict_computed_from_the_runs(tmp_path, bmfl_at_60, verdict):
    timing = {"cpu_s": 60.0, "wall_s": 90.0}
    path = write_report(_fake_records(QUICK, bmfl_at_60), QUICK, tmp_path, timing, "bmfl reproduce --quick")
    text = path.read_text()
    for section in SECTIONS:
        assert section in text
    bmfl_rows = [line for line in text.splitlines() if line.startswith("| sign_flip | BMFL |")]
    assert bmfl_rows and bmfl_rows[0].endswith(f"| {verdict} |")
    fedavg_rows = [line for line in text.splitlines() if line.startswith("| same_value | FedAvg |")]
    assert fedavg_rows[0].endswith("| 12.5 % | 14.3 % | met |")  # 0.1 / 0.8 kept; 0.1 / 0.7 of the ideal filter's
    for png in ("fig5.png", "fig6.png", "fig7.png", "fbfl.png", "traffic.png", "fedaux.png", "bafdp.png"):
        assert (tmp_path / "results" / png).read_bytes()[:4] == b"\x89PNG"
    records, scale, again, command = read_records(tmp_path / "results" / "runs.jsonl")
    assert (len(records), scale, again, command) == (len(grid(QUICK)), "quick", timing, "bmfl reproduce --quick")


def test_resume_reuses_unchanged_runs_and_counts_their_cost():
    records = _fake_records(QUICK, 0.5)
    reuse = {r["fingerprint"]: r for r in records.values()}
    again, timing = run_grid(grid(QUICK), Console(quiet=True), reuse)
    assert again.keys() == records.keys() and all(again[k]["rows"] == records[k]["rows"] for k in records)
    assert timing["reused"] == len(reuse) and timing["cpu_s"] == float(len(reuse))


def test_parallel_jobs_give_the_records_of_a_sequential_run():
    runs = [run for run in grid(QUICK) if run.key in ("fig6/sign_flip/0.2/BMFL", "fbfl/clients/5")]
    runs = [Run(run.key, {**run.config, "rounds": 1}) for run in runs]
    sequential, _ = run_grid(runs, Console(quiet=True))
    parallel, timing = run_grid(runs, Console(quiet=True), jobs=2)
    timed = ("wall_time_s", "compute_s_vehicles")
    without_time = lambda rec: [{k: v for k, v in row.items() if k not in timed} for row in rec["rows"]]  # noqa: E731
    assert parallel.keys() == sequential.keys()
    for key in sequential:
        assert without_time(parallel[key]) == without_time(sequential[key])
        assert parallel[key]["attackers"] == sequential[key]["attackers"]
    assert timing["cpu_s"] > 0 and timing["reused"] == 0


@pytest.fixture(scope="module")
def bafdp_quick():
    """The quick grid's BAFDP runs, run once for the module (one process, as ``--only bafdp``
    runs them): :func:`test_bafdp_quick_section_runs_and_states_every_seed` checks them, and
    :func:`test_quick_grid_runs_end_to_end` takes them by fingerprint, the resume path of
    ``run_grid``, instead of simulating the same 40 configs a second time."""
    runs = [run for run in grid(QUICK) if run.key.startswith("bafdp/")]
    records, timing = run_grid(runs, Console(quiet=True))
    return runs, records, timing


@pytest.mark.slow
def test_quick_grid_runs_end_to_end(tmp_path, bafdp_quick):
    runs = grid(QUICK)
    bafdp_runs, bafdp_records, _ = bafdp_quick
    reuse = {rec["fingerprint"]: rec for rec in bafdp_records.values()}
    records, timing = run_grid(runs, Console(quiet=True), reuse, jobs=2)
    assert timing["reused"] == len(reuse) and {r.key for r in bafdp_runs} <= records.keys()
    assert records.keys() == {r.key for r in runs}
    text = write_report(records, QUICK, tmp_path, timing, "bmfl reproduce --quick").read_text()
    for section in SECTIONS:
        assert section in text
    assert "nan" not in text.lower().replace("nano", "")
    # known answer: same-value attackers (parameters 100) wreck undefended FedAvg at 60 %
    assert records["fig6/same_value/0.6/FedAvg"]["rows"][-1]["accuracy"] < 0.2
    bmfl = records["fig6/same_value/0.6/BMFL"]["rows"]
    assert sum(r["attackers_flagged"] for r in bmfl) == sum(r["attackers_selected"] for r in bmfl) > 0


def test_bafdp_quick_section_runs_and_states_every_seed(tmp_path, bafdp_quick):
    """BAFDP's quick form end to end: finite errors on the original scale, MAE ≤ RMSE,
    every seed in the table, ε falling as σ_x grows, the attack table and the plot."""
    runs, records, timing = bafdp_quick
    assert records.keys() == {r.key for r in runs} and timing["reused"] == 0
    text = write_report(records, QUICK, tmp_path, timing, "bmfl reproduce --quick --only bafdp", ["bafdp"]).read_text()
    section = text.split("## BAFDP", 1)[1]
    for heading in ("### Accuracy of the rules", "### Accuracy vs privacy budget", "### Degradation vs the Byzantine",
                    "### Time to a target RMSE"):
        assert heading in section
    for key, rec in records.items():
        errors = rec["original"]
        if "/sync/" in key or "/async/" in key or "/privacy/" in key:  # clean runs: finite, MAE ≤ RMSE
            assert 0 < errors["mae"] <= errors["rmse"] < 10, key
    per_seed = [line for line in section.splitlines() if line.startswith(("| FedAvg | sync", "| median | async"))]
    assert len(per_seed) == 2 and all(f"s{seed} " in line for line in per_seed for seed in range(QUICK.bafdp_seeds))
    epsilons = [records[f"bafdp/privacy/{sigma:g}/seed 0"]["rows"][-1]["epsilon_max"] for sigma in (0.5, 1.0, 2.0, 4.0)]
    assert epsilons == sorted(epsilons, reverse=True) and epsilons[-1] == pytest.approx(1.0126, abs=1e-3)
    assert "| sign_flip | 25% |" in section and "| gaussian | 25% |" in section
    assert (tmp_path / "results" / "bafdp.png").read_bytes()[:4] == b"\x89PNG"


def test_bafdp_runs_on_telecom_italia_files_when_given():
    runs = [r for r in grid(FULL, ("milan-2013-11-01.txt",)) if r.key.startswith("bafdp/")]
    assert runs and all(r.config["data"] == {"name": "traffic_telecom_italia", "options": {
        "paths": ["milan-2013-11-01.txt"], "cells": [4958, 4959, 4960, 4961, 4962, 5058, 5059, 5060, 5061, 5062]}}
        for r in runs)  # fmt: skip
    assert all(r.config["vehicles"] == 10 for r in runs)  # one vehicle per cell (by_group)
    synthetic = {r.key: r.config for r in grid(FULL) if r.key.startswith("bafdp/")}
    assert {r.key for r in runs} == synthetic.keys()
    assert all(c["data"]["name"] == "traffic_synthetic" for c in synthetic.values())
