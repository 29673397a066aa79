"""Plots and reports read at a glance: every accuracy plot (simulation, demo report, the
reproduction's figures, the robustness matrix) has whole-number round ticks, a 0–1
accuracy axis, a title naming attack, defence and DP, and its legend outside the axes —
read back from the matplotlib objects, not pixels; the demo report fills every column and
names vehicles one way; ``bmfl reproduce`` refuses an unknown section and ``--out`` with
``--publish`` (its ``--quick --only fig7`` run, one figure written to runs/ and docs/ left
alone, is checked by the researcher's quick start, ``tests/test_readme_quickstart.py``)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bmfl.incentives import SCALE
from bmfl.plots import band, round_axis
from bmfl.reproduce import robustness as rm
from bmfl.reproduce.grid import QUICK, SECTION_NAMES
from bmfl.reproduce.report import FIGURES, Report, run_prefixes
from bmfl.simulation import SimulationConfig
from bmfl.simulation.output import rounds_figure
from bmfl.simulation.runner import run_simulation
from chain.audit import Comparison
from launcher.demo import COUNT_ROOM, DEMO_EPSILON
from launcher.report import payout_rows, task_figure, write_report
from test_reproduce import _fake_records
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
A, B, C = "0x" + "A1" * 20, "0x" + "B2" * 20, "0x" + "C3" * 20


def check_axes(ax: Axes, accuracy: bool = True) -> None:
    """Integer round ticks, 0–1 when it shows accuracy, the legend right of the axes."""
    canvas = FigureCanvasAgg(ax.figure)  # also for a figure pyplot already closed
    canvas.draw()
    renderer = canvas.get_renderer()
    if ax.get_xlabel() == "round":
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if accuracy:
        assert ax.get_ylim() == (0.0, 1.0)
    legend = ax.get_legend()
    if legend is not None:
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1 - 1, "legend over the data"


def has_setting(title: str) -> bool:
    return all(word in title for word in ("attack", "defence")) and ("DP" in title)


def test_a_simulations_plot(tmp_path: Path) -> None:
    config = SimulationConfig.model_validate({
        "name": "p", "rounds": 3, "vehicles": 4, "edges": 2, "output_dir": str(tmp_path),
        "data": {"name": "mnist_5k", "edge_test_samples": 50}, "partition": {"kind": "iid", "options": {}},
        "training": {"epochs": 1, "lr": 0.3, "momentum": 0.5, "max_steps": 1, "noise_multiplier": 2.0},
        "attack": {"name": "sign_flip", "fraction": 0.25},
    })  # fmt: skip
    fig = rounds_figure(run_simulation(config, Console(quiet=True)))
    ax = fig.axes[0]
    check_axes(ax)
    assert has_setting(ax.get_title()) and "sign_flip 25%" in ax.get_title() and "σ = 2" in ax.get_title()
    plt.close(fig)


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_reproduction_figure(tmp_path: Path, name: str) -> None:
    rep = Report(_fake_records(QUICK, 0.76), QUICK, tmp_path)
    FIGURES[name](rep)
    fig: Figure = rep.drawn[f"{name}.png"]
    for ax in fig.axes:
        check_axes(ax, accuracy=name != "traffic" and "RMSE" not in ax.get_ylabel())
        assert has_setting(ax.get_title()), ax.get_title()
    assert any(ax.get_legend() for ax in fig.axes)
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_bands_show_the_spread_over_seeds_only_when_seeds_vary() -> None:
    fig, ax = plt.subplots()
    band(ax, [1, 2, 3], [[0.5, 0.6, 0.7]], "one seed")
    assert not ax.collections
    band(ax, [1, 2, 3], [[0.5, 0.6, 0.7], [0.3, 0.8, 0.7]], "two seeds")
    (poly,) = ax.collections
    ys = poly.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.3) and max(ys) == pytest.approx(0.8)
    assert list(ax.lines[1].get_ydata()) == pytest.approx([0.4, 0.7, 0.7])
    round_axis(ax)
    check_axes(ax, accuracy=False)
    plt.close(fig)


def test_fig6_needs_the_clean_runs_of_fig5() -> None:
    assert run_prefixes(["fig7"]) == {"fig7"} and run_prefixes(["fig6"]) == {"fig5", "fig6"}


def test_the_sections_the_command_accepts_are_the_reports() -> None:
    assert tuple(FIGURES) == SECTION_NAMES  # `bmfl reproduce --only` checks names against SECTION_NAMES


# ------------------------------------------------------------------ the demo's report

VIEW = {
    "task_id": 4, "status": "finished", "rounds_finished": 3, "accuracy": [0.2, 0.5, 0.8], "leaders": [0, 1, None],
    "flagged": {"1": [C], "2": [C], "3": []}, "epsilon_max": 1.5,
}  # fmt: skip


def test_the_demo_plot_and_report_fill_every_column_with_one_vehicle_naming(tmp_path: Path) -> None:
    comparisons = [
        Comparison(section="vehicle payout", subject=f"vehicle 0 {A} @ edge 0 (credited)", recomputed=7, on_chain=7),
        Comparison(section="vehicle payout", subject=f"vehicle 1 {B} @ edge 1 (credited)", recomputed=5, on_chain=5),
        Comparison(section="block reward", subject="edge 0 0x" + "E0" * 20, recomputed=3, on_chain=3),
        Comparison(section="publisher", subject="0x" + "D4" * 20 + " (returned)", recomputed=2, on_chain=2),
        Comparison(section="total", subject="available", recomputed=12, on_chain=12),
    ]
    contributions = {0: {0: 2 * SCALE, 2: 0}, 1: {1: SCALE // 2}}  # vehicle 2 (C) flagged every time
    rows = payout_rows(comparisons, contributions, {0: A, 1: B, 2: C}.__getitem__, attackers={C}, leaders=VIEW["leaders"])
    assert [(r["payee"], r["wei"]) for r in rows[:3]] == [(A, 7), (C, 0), (B, 5)]
    assert rows[0]["contribution"] == "θ = 2.0000" and "attacker" in rows[1]["role"]
    assert rows[3]["contribution"] == "leader of 1 rounds" and rows[3]["wei"] == 3
    path = write_report(tmp_path, VIEW, rows, True, "5 vehicles (1 sign_flip attackers), 2 edges, DP-SGD σ = 1, C = 1.")
    tables = [line for line in path.read_text().splitlines() if line.startswith("| ") and not line.startswith("| round") and not line.startswith("| payee")]
    assert tables and all(all(cell.strip() for cell in line.strip("|").split("|")) for line in tables), tables
    flagged_rows = [line for line in tables if C in line]
    assert len(flagged_rows) == 3  # flagged in rounds 1 and 2, and found in the payouts, by the same address
    fig = task_figure(VIEW, "task 4: attack sign_flip · defence BMFL · DP σ = 1")
    check_axes(fig.axes[0])
    plt.close(fig)


# ------------------------------------------------------------------ bmfl reproduce


def bmfl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "BMFL_NODE_MODULES": str(ROOT / "node_modules")}
    return subprocess.run([sys.executable, "-m", "launcher.cli", "reproduce", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# ``bmfl reproduce --quick --only fig7`` itself (one figure, written to runs/, docs/ left
# alone) is checked by tests/test_readme_quickstart.py's researcher quick start, which
# runs that very command: the same two simulations are not run twice in the suite.


def test_reproduce_refuses_an_unknown_section_and_out_with_publish(tmp_path: Path) -> None:
    unknown = bmfl(tmp_path, "--only", "fig9")
    assert unknown.returncode == 2 and "fig9" in unknown.stderr
    both = bmfl(tmp_path, "--publish", "--out", "x")
    assert both.returncode == 2 and "--publish" in both.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "docs").exists()


def test_the_robustness_plot_bands_over_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scale = dataclasses.replace(rm.QUICK, seeds=(0, 1), pipelines=("FedAvg", "BMFL"), attacks=("ALIE z=1.5",))
    frac = scale.fractions[0]
    records = {
        rm.key(part, label, f, pipeline, seed): {"rows": [{"round": r, "accuracy": 0.1 * r + 0.1 * seed} for r in (1, 2, 3)]}
        for part in scale.partitions for label, f in ((rm.CLEAN, 0.0), ("ALIE z=1.5", frac))
        for pipeline in scale.pipelines for seed in scale.seeds
    }  # fmt: skip
    drawn: list[Figure] = []
    monkeypatch.setattr(rm.plt, "close", drawn.append)
    rm.plot(scale, records, tmp_path / "m.png")
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 2 * len(scale.partitions) and all(len(ax.collections) == 2 for ax in panels)  # a band per pipeline
    assert {ax.get_title() for ax in panels} >= {f"ALIE z=1.5, {p}, 20% attackers" for p in scale.partitions}
    for ax in panels:
        check_axes(ax)
    assert "seeds 0, 1" in fig._suptitle.get_text() and "DP" in fig._suptitle.get_text()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["private", "private_leave_out"])
def test_bmfl_demos_report_fills_every_column_and_flagged_vehicles_are_in_the_payouts(tmp_path: Path, preset: str) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "launcher.cli", "demo", "--vehicles", "9", "--edges", "3", "--rounds", "2", "--epochs", "1",
               "--attack-fraction", "0.25", "--attack", "same_value", "--preset", preset, "--output", str(tmp_path / "demo")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after_rule = [line for line in done.stdout.splitlines() if line.strip() and "BMFL demo" not in line and "─" not in line]
    assert re.match(r"dashboard  http://127\.0\.0\.1:\d+/ui ", after_rule[0]), done.stdout[:2000]
    spent = re.search(r"privacy: ε = (\d+\.\d\d) at δ = 1e-05 spent", done.stdout)  # within the target and the count's room
    assert spent and 0 < float(spent[1]) <= DEMO_EPSILON + COUNT_ROOM, done.stdout[-3000:]
    text = (tmp_path / "demo" / "report.md").read_text()
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows and all(cell.strip() for row in rows for cell in row), rows
    rounds = [r for r in rows if r[0].strip().isdigit()]
    payees = {r[0].strip(): r for r in rows if r[0].strip().startswith("0x")}
    flagged = {a.strip() for r in rounds for a in r[3].split(",") if a.strip() != "none"}
    assert flagged and flagged <= set(payees)  # the same names in both tables
    assert all(int(payees[a][3]) == 0 for a in flagged if "θ = 0.0000" in payees[a][2])
    assert sum(int(p[3]) for p in payees.values()) > 0
    # the setting names the edges' filters with their options: leave-out at a fifth of the step, or the full one
    assert "leave_out" in text and ("leave_out(escalation=2.5, step=0.2)" in text) == (preset == "private")


def test_the_demo_refuses_a_preset_without_a_target_epsilon_before_starting_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from launcher.cli import app

    done = CliRunner().invoke(app, ["demo", "--preset", "paper", "--output", str(tmp_path / "demo")])
    assert done.exit_code == 2 and "target ε" in done.output and "private_leave_out" in done.output
    assert not (tmp_path / "demo").exists()
