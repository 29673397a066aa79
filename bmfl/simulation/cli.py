"""``bmfl simulate`` (the in-process simulator; ``bmfl simulate bmfl/configs/demo.toml``
runs the demo setting without services)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

def _run(config, console: Console) -> None:
    """Run and report (torch and the simulator load here, so ``bmfl --help`` stays fast)."""
    from bmfl.simulation.output import round_line, summary_line, summary_table, write_outputs
    from bmfl.simulation.runner import run_simulation

    attack = f"{config.attack.name} × {config.attack.fraction:.0%}" if config.attack.name else "none"
    console.print(
        f"[bold]{config.name}[/]: {config.vehicles} vehicles, {config.edges} edges ({config.assignment.kind}), "
        f"model {config.model}, data {config.data.name} ({config.partition.kind}), "
        f"DP {'on' if config.training.dp else 'off'}, aggregation {config.aggregation.describe()}, attack {attack}, {config.rounds} rounds"
    )
    result = run_simulation(config, console, on_round=lambda m: console.print(round_line(m)))
    console.print(summary_table(result))
    paths = write_outputs(result, Path(config.output_dir) / config.name)
    console.print(f"[bold green]done[/]: {summary_line(result)}; outputs in {paths['jsonl'].parent}")


def simulate(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="TOML or YAML simulation config"),
    rounds: Optional[int] = typer.Option(None, help="override the number of rounds"),
    output_dir: Optional[Path] = typer.Option(None, help="override the output folder"),
) -> None:
    """Run a BMFL simulation in-process (edges + cloud + vehicles, no services)."""
    from bmfl.simulation.config import load_config

    overrides = {k: v for k, v in {"rounds": rounds, "output_dir": str(output_dir) if output_dir else None}.items() if v is not None}
    _run(load_config(config, overrides), Console())

