"""Run one contender of a benchmark in a fresh Python process, so that its time and its
memory are its own (no allocator caches or warmed state left by another contender).

The parent samples the resident memory of the child's process tree (Ray's processes
included) every 20 ms (``bench.common.TreePeak``, which costs the tree little CPU); the
child reports the seconds of the measured call and its own resident memory just before
it. ``python -m bench.isolate SPEC`` is the child's side.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import TreePeak, tree_rss_bytes

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Isolated:
    seconds: float  # the measured call, as timed in the child
    peak_bytes: int  # peak RSS of the child's process tree
    before_bytes: int  # the child's RSS just before the measured call
    result: dict  # what the call returned (JSON)


def run_isolated(target: str, **kwargs: object) -> Isolated:
    """Call ``target`` ("module:function", returning ``(prepare, measured)``: the child
    runs ``prepare()`` untimed, then times ``measured()``, which returns a JSON-able
    dict) in a child process."""
    with tempfile.TemporaryDirectory(prefix="bmfl-bench-") as tmp:
        out = Path(tmp) / "out.json"
        spec = json.dumps({"target": target, "kwargs": kwargs, "out": str(out)})
        proc = subprocess.Popen([sys.executable, "-m", "bench.isolate", spec], cwd=ROOT)
        tree = TreePeak(proc.pid)
        while proc.poll() is None:
            tree.sample()
            time.sleep(0.02)
        if proc.returncode != 0:
            raise RuntimeError(f"{target} failed in its process (exit {proc.returncode})")
        report = json.loads(out.read_text())
    return Isolated(report["seconds"], tree.peak, report["before_bytes"], report["result"])


def _child(spec: dict) -> None:
    module, name = spec["target"].split(":")
    prepare, measured = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    prepare()
    before = tree_rss_bytes(os.getpid())
    start = time.perf_counter()
    result = measured()
    seconds = time.perf_counter() - start
    Path(spec["out"]).write_text(json.dumps({"seconds": seconds, "before_bytes": before, "result": result}))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
