"""Service processes on this machine: each starts in its own session (its process
group), is recognised later by its pid and start time, and is stopped as a group —
the signal first, SIGKILL after a timeout — so nothing it spawned is left behind.

Linux reads ``/proc``; elsewhere a group counts as alive while ``killpg(pgid, 0)``
succeeds. Zombies (exited, not yet reaped by their parent) count as stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

PROC = Path("/proc")


def spawn(command: list[str], env: dict[str, str], log_path: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session, stdin closed, stdout and stderr appended to
    ``log_path``; ``pass_fds`` stay open in the child."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            pass_fds=pass_fds,
        )  # fmt: skip


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, …)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, given ``started``, is the process that started then."""
    if not PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and (started is None or int(fields[19]) == started)


def group_members(pgid: int) -> list[int]:
    """Running (non-zombie) processes of process group ``pgid``."""
    if not PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_empty(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(pgid: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Send ``sig`` to the group, SIGKILL whatever still runs after ``timeout`` s; True
    when the group stopped on ``sig`` alone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return True
    if _wait_empty(pgid, timeout):
        return True
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    if not _wait_empty(pgid, 10.0):
        raise RuntimeError(f"process group {pgid} survived SIGKILL: {group_members(pgid)}")
    return False
