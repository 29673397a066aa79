"""The README's quick start for the operator and the researcher, run verbatim: each
``bash`` block under "## Quick start: operator" / "## Quick start: researcher" runs with
``bash -e`` from the repository root, with the virtual environment's ``bmfl``
first on PATH, and leaves what the README says it leaves (``bmfl reproduce --quick --only
fig7``: that one figure in runs/reproduce, nothing written under docs/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tooling import needs_tool, requires_anvil

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

pytestmark = [pytest.mark.slow, needs_tool("jq/curl", bool(shutil.which("jq") and shutil.which("curl")), "apt-get install jq curl")]


def quickstart(user: str) -> str:
    section = README[README.index(f"## Quick start: {user}\n") :]
    section = section[: section.index("\n## ", 1)]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block for the {user}"
    return match.group(1)


def run(script: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {"PATH": bin_dir + os.pathsep + os.environ["PATH"], "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@requires_anvil
def test_the_operators_quick_start() -> None:
    run_dir = ROOT / "runs" / "quickstart"
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        done = run(quickstart("operator"))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "bmfl_tasks_published_total 0.0" in done.stdout and '"logger":"bmfl.access"' in done.stdout
        assert not (run_dir / "stack.json").exists()  # bmfl down ran
    finally:
        run("bmfl down --run-dir runs/quickstart || true")
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_researchers_quick_start() -> None:
    for folder in ("quickstart", "reproduce"):
        shutil.rmtree(ROOT / "runs" / folder, ignore_errors=True)
    before = sorted((p.relative_to(ROOT), p.stat().st_mtime) for p in (ROOT / "docs").rglob("*"))
    done = run(quickstart("researcher"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("metrics.jsonl", "metrics.csv", "config.json", "payouts.json", "accuracy.png"):
        assert name in done.stdout and (ROOT / "runs" / "quickstart" / "example" / name).is_file()
    # `bmfl reproduce --quick --only fig7`: that one figure, written to runs/, docs/ left alone
    text = (ROOT / "runs" / "reproduce" / "results.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h for h in headings if "Fig." in h or "FBFL" in h or "001" in h] == ["## BMFL Fig. 7: backdoor attack success over the rounds"]
    assert sorted(p.name for p in (ROOT / "runs" / "reproduce" / "results").iterdir()) == ["fig7.png", "runs.jsonl"]
    assert sorted((p.relative_to(ROOT), p.stat().st_mtime) for p in (ROOT / "docs").rglob("*")) == before
