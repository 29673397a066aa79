"""``bmfl reproduce [--quick] [--only fig7] [--publish]``: run the grid and write the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

RUNS_OUT, PUBLISHED = Path("runs/reproduce"), Path("docs")


def reproduce(
    quick: bool = typer.Option(False, "--quick", help="the small CI grid (minutes) instead of the full one"),
    out: Path | None = typer.Option(None, help=f"folder for results.md and results/ (PNGs, raw metrics); default {RUNS_OUT}"),
    publish: bool = typer.Option(False, "--publish", help=f"write to {PUBLISHED}/ (the committed report) instead of {RUNS_OUT}/"),
    only: list[str] = typer.Option([], "--only", help="run and render only these sections: fig5, fig6, fig7, fbfl, traffic, fedaux, bafdp (repeatable)"),
    report_only: bool = typer.Option(False, "--report-only", help="re-render OUT/results.md from OUT/results/runs.jsonl"),
    resume: bool = typer.Option(False, "--resume", help="reuse runs of OUT/results/runs.jsonl whose config is unchanged"),
    telecom_italia: list[Path] = typer.Option(
        [], "--telecom-italia", help="Telecom Italia grid files: the bafdp section runs on central Milan cells from them "
        "instead of synthetic traffic (repeatable)",
    ),  # fmt: skip
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="simulations run at once, each in its own process on one thread"),
) -> None:
    """Run the papers' experiment grid and write OUT/results.md with tables and plots
    (runs/reproduce/ unless --publish writes the committed docs/)."""
    from bmfl.reproduce.grid import SCALES, SECTION_NAMES, grid

    if publish and out is not None:
        raise typer.BadParameter("give --out or --publish, not both", param_hint="--publish")
    if unknown := set(only) - set(SECTION_NAMES):
        raise typer.BadParameter(f"unknown section {', '.join(sorted(unknown))}; one of {', '.join(SECTION_NAMES)}", param_hint="--only")
    from bmfl.reproduce.report import read_records, run_prefixes, write_report  # torch, matplotlib: after the checks

    out = PUBLISHED if publish else out or RUNS_OUT
    saved = out / "results" / "runs.jsonl"
    if report_only:
        records, scale_name, timing, command = read_records(saved)
        Console().print(f"re-rendered {write_report(records, SCALES[scale_name], out, timing, command, only or None)}")
        return
    import torch

    from bmfl.reproduce.run import run_grid

    reuse = {r["fingerprint"]: r for r in read_records(saved)[0].values()} if resume and saved.exists() else None
    torch.set_num_threads(1)
    scale = SCALES["quick" if quick else "full"]
    console = Console()
    runs = [r for r in grid(scale, tuple(str(p) for p in telecom_italia)) if not only or r.key.split("/")[0] in run_prefixes(only)]
    console.print(f"[bold]bmfl reproduce[/]: {scale.name} grid, {len(runs)} runs → {out}")
    records, timing = run_grid(runs, console, reuse, jobs)
    command = "bmfl reproduce" + (" --quick" if quick else "") + "".join(f" --only {n}" for n in only) + "".join(
        f" --telecom-italia {p}" for p in telecom_italia)
    path = write_report(records, scale, out, timing, command, only or None)
    console.print(f"[bold green]done[/] in {timing['cpu_s'] / 60:.1f} min CPU, {timing['wall_s'] / 60:.1f} min wall: {path}")
