"""External tools the tests need (Anvil, node/solc, an IPFS node, dev-extra packages):
skipped on a developer's machine without them, a failure in CI (``CI=true``), so a CI
image that lost a tool cannot pass by skipping what needed it.

Every such skip has a reason starting with :data:`MISSING` ("missing tool: <name>");
``tests/conftest.py`` turns any skip with that prefix into a failure under CI, so
``pytest.mark.skipif(..., reason="missing tool: ...")`` and fixtures that skip with that
reason are covered too. Other skips (no Docker Compose plugin) stay skips."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from chain.anvil import find_anvil

MISSING = "missing tool: "
REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """``CI`` set to a true value (GitHub Actions, GitLab and most runners set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def missing(name: str, reason: str = "") -> str:
    """The skip reason for a missing ``name``: "missing tool: name (reason)"."""
    return MISSING + name + (f" ({reason})" if reason else "")


def require_tool(name: str, available: bool, reason: str = "") -> None:
    """Inside a test or fixture: skip when ``available`` is false, fail under CI."""
    if available:
        return
    if in_ci():
        pytest.fail(missing(name, reason) + " [CI=true: a missing tool fails the run]", pytrace=False)
    pytest.skip(missing(name, reason))


def needs_tool(name: str, available: bool, reason: str = "") -> pytest.MarkDecorator:
    """A ``skipif`` mark for a missing tool (failed under CI by the conftest hook)."""
    return pytest.mark.skipif(not available, reason=missing(name, reason))


def import_tool(module: str, reason: str = "pip install -e '.[dev]'") -> ModuleType:
    """``pytest.importorskip`` for a dev-extra package, as a missing tool."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require_tool(module, False, reason)
        raise  # unreachable: require_tool skips or fails


HAS_ANVIL = find_anvil() is not None
HAS_SOLC = shutil.which("node") is not None and (REPO_ROOT / "node_modules" / "solc").is_dir()

requires_anvil = needs_tool("anvil", HAS_ANVIL, "npm ci installs @foundry-rs/anvil")
requires_solc = needs_tool("node/solc", HAS_SOLC, "node on PATH and npm ci")


def require_anvil() -> None:
    require_tool("anvil", HAS_ANVIL, "npm ci installs @foundry-rs/anvil")
