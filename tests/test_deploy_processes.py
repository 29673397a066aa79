"""How ``bmfl down`` stops services: the whole process group, the stop signal first,
SIGKILL after the timeout, and never a process that merely reuses a recorded pid."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from launcher import procs
from launcher.stack import ServiceProcess, ServiceRecord

STUBBORN = "trap '' TERM; sleep 300 & sleep 300 & wait"
"""A shell and two children that all ignore SIGTERM."""


def test_a_group_that_honours_sigterm_stops_on_it(tmp_path: Path) -> None:
    proc = procs.spawn(["sh", "-c", "sleep 300 & wait"], {"PATH": "/usr/bin:/bin"}, tmp_path / "log")
    assert procs.is_running(proc.pid, procs.start_time(proc.pid))
    assert procs.stop_group(proc.pid, signal.SIGTERM, timeout=10) is True
    proc.wait()
    assert procs.group_members(proc.pid) == []


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout_children_included(tmp_path: Path) -> None:
    proc = procs.spawn(["sh", "-c", STUBBORN], {"PATH": "/usr/bin:/bin"}, tmp_path / "log")
    deadline = time.monotonic() + 10
    while len(procs.group_members(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    children = [p for p in procs.group_members(proc.pid) if p != proc.pid]
    assert procs.stop_group(proc.pid, signal.SIGTERM, timeout=0.5) is False
    proc.wait()
    assert procs.group_members(proc.pid) == [] and not any(procs.is_running(c) for c in children)


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = procs.start_time(stranger.pid)
        assert started is not None
        record = ServiceRecord(
            name="edge-0", pid=stranger.pid, started=started - 1, url="http://x", log_path=tmp_path / "log", probe="service"
        )
        service = ServiceProcess.from_record(record)
        assert not service.running
        service.stop(timeout=0.5)
        assert procs.is_running(stranger.pid, started)
    finally:
        stranger.kill()
        stranger.wait()
