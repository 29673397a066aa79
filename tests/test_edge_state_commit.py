"""The edge's group commit of accepted updates (``EdgeState.add_update``) on a real SQLite
file: concurrent inserts each get their own answer (accepted once, ``duplicate``,
``round_not_open``), and an update acknowledged before the process is killed with
SIGKILL is in the database after it reopens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_node.state import EdgeState, UpdateRow

ROOT = Path(__file__).resolve().parent.parent

# A writer process: opens the state, opens round 1 of task 1 for 10,000 vehicles, then
# inserts them from 8 threads and prints each vehicle the moment add_update returns.
WRITER = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from edge_node.state import EdgeState, UpdateRow
state = EdgeState(Path(sys.argv[1]))
state.open_round(1, 1, "cid", "0x00", list(range(10000)))
lock = threading.Lock()
def add(v):
    assert state.add_update(UpdateRow(1, 1, v, "0xabc", f"0x{v:064x}", f"cid{v}", None, "0xsig", 1)) is None
    with lock:
        sys.stdout.write(f"{v}\\n"); sys.stdout.flush()
print("ready", flush=True)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(add, range(10000)))
"""


def row(vehicle: int, round_: int = 1, digest: str = "0x01") -> UpdateRow:
    return UpdateRow(1, round_, vehicle, "0xabc", digest, f"cid{vehicle}", None, "0xsig", round_)


def test_concurrent_inserts_each_get_their_answer(tmp_path: Path) -> None:
    state = EdgeState(tmp_path / "edge.sqlite3")
    try:
        state.open_round(1, 1, "cid", "0x00", list(range(20)))
        attempts = [row(v % 20, digest=f"0x{v:02x}") for v in range(60)]  # each vehicle three times
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(state.add_update, attempts))
        assert Counter(answers) == {None: 20, "duplicate": 40}
        stored = {u.vehicle: u.digest for u in state.updates(1, 1)}
        accepted = {a.vehicle: a.digest for a, answer in zip(attempts, answers) if answer is None}
        assert stored == accepted and len(stored) == 20  # the row kept is the one acknowledged
        assert state.uploaders(1, 1) == list(range(20)) and state.update_count(1, 1) == 20
        assert state.uploaders(1, 2) == [] and state.update_count(1, 2) == 0
        assert state.add_update(row(0, round_=2)) == "round_not_open"  # never opened
        state.begin_close(1, 1)
        assert state.add_update(row(25)) == "round_not_open"
        assert len(state.updates(1, 1)) == 20
    finally:
        state.close()


def test_acknowledged_updates_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "edge.sqlite3"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    acked = []
    start = time.monotonic()
    while len(acked) < 200 and time.monotonic() - start < 120:
        acked.append(int(writer.stdout.readline()))
    writer.send_signal(signal.SIGKILL)  # mid-stream: more inserts are in flight
    acked += [int(line) for line in writer.stdout.read().split()]  # acknowledged before the kill
    writer.wait()
    assert writer.returncode == -signal.SIGKILL and len(acked) >= 200
    state = EdgeState(path)
    try:
        stored = {u.vehicle for u in state.updates(1, 1)}
    finally:
        state.close()
    assert set(acked) <= stored
    assert len(stored) < 10000  # it was killed before it could finish


def test_a_previous_edge_cannot_hand_over_rounds_no_report_can_enter(tmp_path: Path) -> None:
    """Adoption applies the releasing edge's own rule: an open round, or in an asynchronous
    task (reach τ_max) a closed round among the last τ_max; any other round a lying
    previous edge names is ignored."""
    state = EdgeState(tmp_path / "edge.sqlite3")
    try:
        for r in (1, 2, 3):
            state.open_round(1, r, "cid", "0x00", [5])
            if r < 3:
                state.begin_close(1, r)
        named = [(1, 1), (1, 2), (1, 3), (9, 1)]  # (9, 1): a round this edge never opened
        state.adopt_trainer(7, named)  # synchronous: only the open round
        assert [state.round(1, r).selected for r in (1, 2, 3)] == [[5], [5], [5, 7]]  # type: ignore[union-attr]
        state.adopt_trainer(8, named, lambda task_id: 1)  # τ_max = 1: round 2 too, not round 1
        assert [state.round(1, r).selected for r in (1, 2, 3)] == [[5], [5, 8], [5, 7, 8]]  # type: ignore[union-attr]
        assert state.release_trainer(8, lambda task_id: 1) == [(1, 3), (1, 2)]
    finally:
        state.close()
