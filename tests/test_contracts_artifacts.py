"""Committed artifacts agree with the Solidity sources: source hashes always, a full
recompile with the pinned npm ``solc`` when node is present."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from chain.artifacts import ARTIFACTS_DIR, CONTRACTS_DIR, load_artifact
from chain.anvil import REPO_ROOT
from tooling import requires_solc

CONTRACTS = ["BMFLRegistry", "BMFLTasks", "NaiveRecords", "ClaimReentrancyAttacker"]


def source_file(name: str) -> str:
    return str(REPO_ROOT / "node_modules" / name) if name.startswith("@") else str(CONTRACTS_DIR / name)


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_source_hashes_match(name: str) -> None:
    art = load_artifact(name)
    assert art.bytecode.startswith("0x") and len(art.bytecode) > 2
    assert art.compiler["settings"]["optimizer"]["enabled"] is True
    for source, sha in art.sources.items():
        path = source_file(source)
        if source.startswith("@") and not (REPO_ROOT / "node_modules").is_dir():
            continue  # dependency sources come with `npm ci`
        with open(path, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == sha, f"{source} changed: run `node contracts/build.js`"


def test_every_source_is_covered() -> None:
    covered = {s for n in CONTRACTS for s in load_artifact(n).sources}
    on_disk = {str(p.relative_to(CONTRACTS_DIR)) for d in ("src", "bench", "test") for p in (CONTRACTS_DIR / d).glob("*.sol")}
    assert on_disk <= covered
    assert {p.stem for p in ARTIFACTS_DIR.glob("*.json")} == set(CONTRACTS)


@requires_solc
def test_full_recompile_reproduces_artifacts() -> None:
    done = subprocess.run(["node", str(CONTRACTS_DIR / "build.js"), "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
