"""``bmfl chain deploy`` and ``bmfl chain status`` against a real Anvil."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from chain.anvil import AnvilNode
from chain.cli import chain_app
from chain_fixtures import requires_anvil


@requires_anvil
def test_deploy_then_status(tmp_path: Path) -> None:
    runner = CliRunner()
    with AnvilNode() as node:
        args = ["--rpc", node.url, "--deployments", str(tmp_path)]
        missing = runner.invoke(chain_app, ["status", *args])
        assert missing.exit_code == 1 and "not deployed" in missing.output
        done = runner.invoke(chain_app, ["deploy", *args])
        assert done.exit_code == 0, done.output
        assert (tmp_path / "31337.json").is_file()
        shown = runner.invoke(chain_app, ["status", *args])
        assert shown.exit_code == 0 and "tasks 0" in shown.output
