"""The ``bmfl`` command line. Each command group lives beside the code it drives and is
attached here."""

from __future__ import annotations

import typer

from bmfl.blobs.cli import blob_app
from bmfl.reproduce.cli import reproduce
from launcher.demo import demo
from launcher.k8s import k8s
from launcher.local import down, status, up
from launcher.claim import claim
from launcher.refund import refund_command
from launcher.task_cli import task_app
from bmfl.simulation.cli import simulate
from chain.audit_cli import audit
from chain.cli import chain_app

app = typer.Typer(
    name="bmfl",
    help="BMFL: blockchain-anchored federated learning at the mobile edge.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(simulate)
app.command()(demo)
app.command()(reproduce)
app.add_typer(blob_app, name="blob")
app.add_typer(chain_app, name="chain")
app.add_typer(task_app, name="task")
app.command()(claim)
app.command()(audit)
app.command()(up)
app.command()(down)
app.command()(status)
app.command()(k8s)


tasks_app = typer.Typer(help="Alias of `bmfl task` kept for `bmfl tasks refund`.", no_args_is_help=True)
tasks_app.command("refund")(refund_command)
app.add_typer(tasks_app, name="tasks", hidden=True)


@app.command()
def version() -> None:
    """Print the BMFL version."""
    from bmfl import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
