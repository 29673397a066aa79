"""A missing tool skips on a developer's machine and fails under ``CI=true``
(``tests/tooling.py``, ``tests/conftest.py``): pytest runs in a subprocess on generated
test files that need a tool nobody has, every way a test can ask for one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tooling import in_ci

TESTS = Path(__file__).resolve().parent

NEEDS = '''
import pytest
from tooling import import_tool, needs_tool, require_tool

@pytest.fixture
def ipfs_node():
    pytest.skip("missing tool: ipfs (no kubo binary on PATH)")  # as the IPFS node fixture does

def test_require_tool():
    require_tool("no-such-tool", False, "never installed")

@needs_tool("no-such-tool", False, "never installed")
def test_marked():
    pass

def test_fixture(ipfs_node):
    pass

def test_import_tool():
    import_tool("no_such_module_bmfl")

@pytest.mark.skip(reason="no Docker Compose plugin")
def test_legitimate_skip():
    pass

def test_present_tool():
    require_tool("python", True)
'''
MODULE_LEVEL = '''
import pytest
pytest.skip("missing tool: no-such-tool (module level)", allow_module_level=True)

def test_never_collected():
    pass
'''


def run(tmp_path: Path, ci: str | None, source: str = NEEDS) -> tuple[int, dict[str, int]]:
    """pytest's exit code and outcome counts on ``source``, with ``CI`` set to ``ci`` (or unset)."""
    (tmp_path / "test_generated.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    last = done.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    return done.returncode, counts


def test_missing_tools_skip_outside_ci(tmp_path: Path) -> None:
    assert run(tmp_path, None) == (0, {"passed": 1, "skipped": 5})
    assert run(tmp_path, "false", MODULE_LEVEL) == (5, {"skipped": 1})  # 5: no tests ran, none failed


def test_missing_tools_fail_in_ci(tmp_path: Path) -> None:
    # the four tests that need a missing tool fail (a mark or a fixture fails at setup,
    # which pytest counts as an error); the legitimate skip stays a skip
    assert run(tmp_path, "true") == (1, {"failed": 2, "errors": 2, "passed": 1, "skipped": 1})


def test_module_level_skip_for_a_missing_tool_is_an_error_in_ci(tmp_path: Path) -> None:
    code, counts = run(tmp_path, "true", MODULE_LEVEL)
    assert code != 0 and counts == {"error": 1}, counts


def test_ci_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in [("true", True), ("1", True), ("false", False), ("", False)]:
        monkeypatch.setenv("CI", value)
        assert in_ci() is expected
    monkeypatch.delenv("CI")
    assert in_ci() is False
