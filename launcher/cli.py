"""The ``bmfl`` command line. Each command group lives beside the code it drives and is
attached here by name; its module is imported only when that command runs (``bmfl claim``
needs web3, not torch), so a command starts in a fraction of a second."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup
from typer.main import get_command, get_group

# name → (module, attribute): a function becomes a command, a Typer app a command group
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("bmfl.simulation.cli", "simulate"),
    "demo": ("launcher.demo", "demo"),
    "reproduce": ("bmfl.reproduce.cli", "reproduce"),
    "blob": ("bmfl.blobs.cli", "blob_app"),
    "chain": ("chain.cli", "chain_app"),
    "task": ("launcher.task_cli", "task_app"),
    "claim": ("launcher.claim", "claim"),
    "audit": ("chain.audit_cli", "audit"),
    "up": ("launcher.local", "up"),
    "down": ("launcher.local", "down"),
    "status": ("launcher.local", "status"),
    "k8s": ("launcher.k8s", "k8s"),
    "tasks": ("launcher.refund", "tasks_alias"),  # hidden: `bmfl tasks refund`, kept for old scripts
}
HIDDEN = {"tasks"}


def load_command(name: str) -> Any:
    """The click command for ``name``, importing its module now."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command = get_group(target)
    else:
        single = typer.Typer()
        single.command(name=name)(target)
        command = get_command(single)
    command.name, command.hidden = name, name in HIDDEN
    return command


class LazyGroup(TyperGroup):
    """A command group whose commands are imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS:
            return load_command(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="bmfl",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def bmfl() -> None:
    """BMFL: blockchain-anchored federated learning at the mobile edge."""


@app.command()
def version() -> None:
    """Print the BMFL version."""
    from bmfl import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
