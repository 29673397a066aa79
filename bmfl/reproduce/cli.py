"""``bmfl reproduce [--quick]``: run the grid and write the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def reproduce(
    quick: bool = typer.Option(False, "--quick", help="the small CI grid (minutes) instead of the full one"),
    out: Path = typer.Option(Path("docs"), help="folder for results.md and results/ (PNGs, raw metrics)"),
    report_only: bool = typer.Option(False, "--report-only", help="re-render OUT/results.md from OUT/results/runs.jsonl"),
    resume: bool = typer.Option(False, "--resume", help="reuse runs of OUT/results/runs.jsonl whose config is unchanged"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="simulations run at once, each in its own process on one thread"),
) -> None:
    """Run the papers' experiment grid and write OUT/results.md with tables and plots."""
    import torch

    from bmfl.reproduce.grid import SCALES, grid
    from bmfl.reproduce.report import read_records, write_report
    from bmfl.reproduce.run import run_grid

    saved = out / "results" / "runs.jsonl"
    if report_only:
        records, scale_name, timing, command = read_records(saved)
        Console().print(f"re-rendered {write_report(records, SCALES[scale_name], out, timing, command)}")
        return
    reuse = {r["fingerprint"]: r for r in read_records(saved)[0].values()} if resume and saved.exists() else None
    torch.set_num_threads(1)
    scale = SCALES["quick" if quick else "full"]
    console = Console()
    runs = grid(scale)
    console.print(f"[bold]bmfl reproduce[/]: {scale.name} grid, {len(runs)} runs")
    records, timing = run_grid(runs, console, reuse, jobs)
    command = "bmfl reproduce" + (" --quick" if quick else "")
    path = write_report(records, scale, out, timing, command)
    console.print(f"[bold green]done[/] in {timing['cpu_s'] / 60:.1f} min CPU, {timing['wall_s'] / 60:.1f} min wall: {path}")
