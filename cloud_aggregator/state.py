"""The cloud's SQLite state: published tasks and finished rounds. Committed before the
API answers, so a restarted cloud resumes every running task where the chain left it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from bmfl.protocol.schemas import TaskSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    initial_cid TEXT NOT NULL,
    test_set_digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (task_id, round)
);
CREATE TABLE IF NOT EXISTS server_state (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (task_id, round)
);
"""


class CloudState:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "cloud.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add_task(self, spec: TaskSpec, status: str, initial_cid: str, test_set_digest: str) -> None:
        self._rows(
            "INSERT INTO tasks (task_id, spec, status, initial_cid, test_set_digest) VALUES (?, ?, ?, ?, ?)",
            spec.task_id, spec.model_dump_json(), status, initial_cid, test_set_digest,
        )  # fmt: skip

    def set_status(self, task_id: int, status: str, detail: str = "") -> None:
        self._rows("UPDATE tasks SET status = ?, detail = ? WHERE task_id = ?", status, detail, task_id)

    def task(self, task_id: int) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT task_id, spec, status, detail, initial_cid, test_set_digest FROM tasks WHERE task_id = ?", task_id
        )
        return _task(rows[0]) if rows else None

    def tasks(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT task_id, spec, status, detail, initial_cid, test_set_digest FROM tasks ORDER BY task_id")
        return [_task(r) for r in rows]

    def put_round(self, task_id: int, round_: int, record: dict[str, Any]) -> None:
        self._rows("INSERT OR REPLACE INTO rounds (task_id, round, record) VALUES (?, ?, ?)", task_id, round_, json.dumps(record))

    def put_server_state(self, task_id: int, round_: int, state: bytes) -> None:
        """The server optimiser's state after ``round_`` (safetensors), kept before the
        round is finalized on chain, so a retried finalize starts from round − 1's."""
        self._rows("INSERT OR REPLACE INTO server_state (task_id, round, state) VALUES (?, ?, ?)", task_id, round_, state)

    def server_state(self, task_id: int, round_: int) -> bytes | None:
        rows = self._rows("SELECT state FROM server_state WHERE task_id = ? AND round = ?", task_id, round_)
        return rows[0][0] if rows else None

    def rounds(self, task_id: int) -> list[dict[str, Any]]:
        rows = self._rows("SELECT record FROM rounds WHERE task_id = ? ORDER BY round", task_id)
        return [json.loads(r[0]) for r in rows]


def _task(row: tuple) -> dict[str, Any]:
    task_id, spec, status, detail, initial_cid, digest = row
    return {
        "task_id": task_id, "spec": TaskSpec.model_validate_json(spec), "status": status, "detail": detail,
        "initial_cid": initial_cid, "test_set_digest": digest,
    }  # fmt: skip
