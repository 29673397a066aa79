"""Layers point one way (docs/architecture.md): ``lint-imports`` checks the layers
contract in pyproject.toml on the real import graph."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
LAYERS = ["launcher", "edge_node | cloud_aggregator | vehicle_client", "service_kit", "chain", "bmfl"]


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_layers_contract_names_every_package_in_order():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert contract["type"] == "layers" and contract["layers"] == LAYERS
    assert set(config["root_packages"]) == {p.strip() for layer in LAYERS for p in layer.split("|")}


def test_the_import_graph_keeps_the_layers():
    out = _lint()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the tree where the core imports the chain."""
    for package in {p.strip() for layer in LAYERS for p in layer.split("|")}:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "bmfl" / "upward.py").write_text("import chain.tasks\n")
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())", "--no-cache"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0 and "bmfl.upward -> chain.tasks" in out.stdout, out.stdout + out.stderr
