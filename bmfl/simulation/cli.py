"""``bmfl simulate`` (the in-process simulator; ``bmfl simulate bmfl/configs/demo.toml``
runs the demo setting without services; ``--ray auto`` trains its vehicles on a Ray
cluster, ``--device cuda`` on this machine's GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

def _run(config, console: Console, ray_address: str | None = None, device: str | None = None) -> None:
    """Run and report (torch and the simulator load here, so ``bmfl --help`` stays fast)."""
    from bmfl.device import default_device, using
    from bmfl.simulation.output import round_line, summary_line, summary_table, write_outputs
    from bmfl.simulation.runner import run_simulation

    attack = f"{config.attack.name} × {config.attack.fraction:.0%}" if config.attack.name else "none"
    console.print(
        f"[bold]{config.name}[/]: {config.vehicles} vehicles, {config.edges} edges ({config.assignment.kind}), "
        f"model {config.model}, data {config.data.name} ({config.partition.kind}), "
        f"DP {'on' if config.training.dp else 'off'}, aggregation {config.aggregation.describe()}, attack {attack}, {config.rounds} rounds, "
        f"device {device or default_device()}"
    )
    with using(device or default_device()):
        result = run_simulation(config, console, on_round=lambda m: console.print(round_line(m)), ray_address=ray_address)
    console.print(summary_table(result))
    paths = write_outputs(result, Path(config.output_dir) / config.name)
    console.print(f"[bold green]done[/]: {summary_line(result)}; outputs in {paths['jsonl'].parent}")


def simulate(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="TOML or YAML simulation config"),
    rounds: Optional[int] = typer.Option(None, help="override the number of rounds"),
    output_dir: Optional[Path] = typer.Option(None, help="override the output folder"),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="auto|ADDRESS|local",
        help="train the vehicles in Ray tasks: 'auto' joins this machine's Ray cluster, ADDRESS a cluster's "
        "(ray://head:10001), 'local' starts a private instance; same results as in-process (needs bmfl[ray])",
    ),
    device: Optional[str] = typer.Option(
        None, "--device", metavar="cpu|cuda|cuda:N",
        help="where vehicles train and edges score and reweight (default: BMFL_DEVICE, else cuda when a GPU is "
        "visible, else cpu); the same verdicts on every device",
    ),
) -> None:
    """Run a BMFL simulation in-process (edges + cloud + vehicles, no services)."""
    from bmfl.simulation.config import load_config

    if ray is not None:
        from bmfl.simulation.ray_fleet import RayMissing, require_ray

        try:
            require_ray()
        except RayMissing as exc:
            raise typer.BadParameter(str(exc), param_hint="--ray") from None
    if device is not None:
        from bmfl.device import parse_device

        try:
            parse_device(device)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--device") from None
    overrides = {k: v for k, v in {"rounds": rounds, "output_dir": str(output_dir) if output_dir else None}.items() if v is not None}
    _run(load_config(config, overrides), Console(), ray, device)

