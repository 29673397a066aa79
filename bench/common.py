"""What the benchmarks share: result rows, interleaved timing, the resident memory of a
process tree, the machine description and a rich progress display."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Row:
    """One comparison. ``kind="speed-up"`` (times) and ``"less memory"``: baseline /
    ours, both lower-is-better; ``"overhead"``: ours / baseline (the cost ours adds over
    the baseline); ``"throughput"``: ours / baseline, both higher-is-better."""

    bench: str
    case: str
    ours: float
    baseline_name: str
    baseline: float | None
    unit: str
    kind: Literal["speed-up", "less memory", "overhead", "throughput"] = "speed-up"
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.ours == 0 or self.baseline == 0:
            return None
        return self.baseline / self.ours if self.kind in ("speed-up", "less memory") else self.ours / self.baseline

    def ratio_text(self) -> str:
        return "—" if self.ratio is None else f"{self.ratio:.2f}× {self.kind}"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    digits = 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f"{value:,.{digits}f} {unit}"


def print_rows(title: str, rows: list[Row]) -> None:
    """Ours and the baseline side by side, with the ratio."""
    table = Table(title=title)
    for col in ("case", "ours", "baseline", "ratio", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.case, fmt(r.ours, r.unit), f"{r.baseline_name}: {fmt(r.baseline, r.unit)}", r.ratio_text(), r.note)
    console.print(table)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def interleave(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each contender, run in turn ``repeats`` times (A B C A B C …), so
    a change in the machine's load hits every contender alike. A contender that returns
    a float reports the seconds that count itself (its untimed set-up left out)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(out if isinstance(out, float) else time.perf_counter() - start)
    return times


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_pids(root: int) -> list[int]:
    """Process ``root`` and all its living descendants."""
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if Path(f"/proc/{pid}").exists():
            out.append(pid)
            stack += _children(pid)
    return out


PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (0 once it has ended)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreePeak:
    """The peak resident memory of a process tree, sampled at little cost to the tree:
    listing the members (every thread's children) takes about 10 ms of CPU for a Ray
    driver's tree, so it is redone every ``rescan_s``; between rescans each sample reads
    only the known members' ``/proc/PID/statm``. (Listing on every 20 ms sample took half
    a core from whatever ran in the tree.)"""

    def __init__(self, root: int, rescan_s: float = 0.5) -> None:
        self.root, self.rescan_s = root, rescan_s
        self.pids: list[int] = []
        self.scanned = -float("inf")
        self.peak = 0

    def sample(self) -> int:
        if time.monotonic() - self.scanned >= self.rescan_s:
            self.pids, self.scanned = tree_pids(self.root), time.monotonic()
        total = sum(rss_bytes(pid) for pid in self.pids)
        self.peak = max(self.peak, total)
        return total


def tree_rss_bytes(root: int | None = None) -> int:
    """Resident memory of process ``root`` (default: this one) and all its descendants."""
    return sum(rss_bytes(pid) for pid in tree_pids(root or os.getpid()))


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``root`` (default: this one)
    and its living descendants."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in tree_pids(root or os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)
    return total


def _cpuinfo(field: str) -> str | None:
    """The value of ``field`` in the first processor's entry of /proc/cpuinfo, if any."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def vector_width() -> str:
    """The widest SIMD extension the CPU reports (the compiled reweighting pass's speed
    depends on it): AVX-512, AVX2 or neither."""
    flags = (_cpuinfo("flags") or "").split()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"


def machine() -> dict[str, str]:
    """The machine a run measured: CPU model, its vector extensions, cores, torch and its
    threads, versions."""
    return {
        "CPU": cpu_model(),
        "vector extensions": vector_width(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()}",
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "Flower": _version("flwr"),
        "Opacus": _version("opacus"),
        "coincurve (native signatures)": _version("coincurve"),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip
