"""The edge's durable state in SQLite (WAL, synchronous FULL, one writer, one reader): associations,
tasks, rounds, accepted updates and round results. Every write is committed before the
method returns, so whatever the edge has acknowledged survives a restart; uploads that
arrive together are committed in one transaction (group commit, :meth:`EdgeState.add_update`).

Round phases: ``open`` (uploads accepted) → ``closing`` (aggregating, recording) →
``closed`` → ``scored``; an open round the cloud never closed becomes ``expired`` when
the next round of its task opens.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS associations (
  vehicle TEXT PRIMARY KEY, vehicle_index INTEGER NOT NULL, edge TEXT NOT NULL,
  x REAL NOT NULL, y REAL NOT NULL, timestamp_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  task_id INTEGER PRIMARY KEY, task TEXT NOT NULL, test_set TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
  task_id INTEGER NOT NULL, round INTEGER NOT NULL, phase TEXT NOT NULL,
  global_cid TEXT NOT NULL, global_digest TEXT NOT NULL, selected TEXT NOT NULL,
  close TEXT, scores TEXT, PRIMARY KEY (task_id, round));
CREATE TABLE IF NOT EXISTS updates (
  task_id INTEGER NOT NULL, round INTEGER NOT NULL, vehicle INTEGER NOT NULL,
  address TEXT NOT NULL, digest TEXT NOT NULL, cid TEXT NOT NULL, epsilon REAL,
  signature TEXT NOT NULL, base INTEGER NOT NULL, PRIMARY KEY (task_id, round, vehicle));
"""


@functools.lru_cache(maxsize=64)
def _trainers(text: str) -> tuple[int, ...]:
    """A round's trainer list as stored: parsed once (every upload reads its round's row,
    0.05 ms of JSON at 600 trainers); each row gets its own list."""
    return tuple(json.loads(text))


@dataclass(frozen=True)
class AssociationRow:
    """The newest signed association of a vehicle known here (with this edge or another)."""

    vehicle: str
    vehicle_index: int
    edge: str
    x: float
    y: float
    timestamp_ms: int


@dataclass(frozen=True)
class TaskRow:
    task_id: int
    task: str  # EdgeTask JSON
    test_set: str  # path of the test-set file


@dataclass(frozen=True)
class RoundRow:
    task_id: int
    round: int
    phase: str
    global_cid: str
    global_digest: str
    selected: list[int]
    close: str | None  # RoundClose JSON
    scores: str | None  # ScoreResult JSON


@dataclass(frozen=True)
class UpdateRow:
    task_id: int
    round: int
    vehicle: int
    address: str
    digest: str
    cid: str
    epsilon: float | None
    signature: str
    base: int
    """The version the vehicle trained from and signed: ``round`` in a synchronous task,
    round − τ for a stale asynchronous report."""


@dataclass
class _Pending:
    """An update waiting for a group commit, and its answer."""

    row: UpdateRow
    done: bool = False
    refused: str | None = None
    error: Exception | None = None


class EdgeState:
    """SQLite at ``path``; safe to share between the server's threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._group = threading.Condition()  # add_update's group commit
        self._queue: list[_Pending] = []
        self._committing = False
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        if "base" not in {c[1] for c in self._db.execute("PRAGMA table_info(updates)")}:  # a state from before async
            self._db.execute("ALTER TABLE updates ADD COLUMN base INTEGER NOT NULL DEFAULT 0")
            self._db.execute("UPDATE updates SET base = round")
        # reads use their own connection (WAL: they see every committed write and never
        # wait for a commit's fsync)
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_lock = threading.Lock()

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: object) -> list[tuple]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    # associations
    def association(self, vehicle: str) -> AssociationRow | None:
        rows = self._rows("SELECT * FROM associations WHERE vehicle = ?", vehicle)
        return AssociationRow(*rows[0]) if rows else None

    def save_association(self, row: AssociationRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO associations VALUES (?, ?, ?, ?, ?, ?)", tuple(row.__dict__.values()))

    def associated(self, edge: str) -> list[AssociationRow]:
        rows = self._rows("SELECT * FROM associations WHERE edge = ? ORDER BY vehicle_index", edge)
        return [AssociationRow(*r) for r in rows]

    # tasks
    def save_task(self, row: TaskRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (row.task_id, row.task, row.test_set))

    def task(self, task_id: int) -> TaskRow | None:
        rows = self._rows("SELECT * FROM tasks WHERE task_id = ?", task_id)
        return TaskRow(*rows[0]) if rows else None

    def tasks(self) -> list[TaskRow]:
        return [TaskRow(*r) for r in self._rows("SELECT * FROM tasks ORDER BY task_id")]

    # rounds
    @staticmethod
    def _round(row: tuple) -> RoundRow:
        return RoundRow(*row[:5], list(_trainers(row[5])), *row[6:])

    def round(self, task_id: int, round_: int) -> RoundRow | None:
        rows = self._rows("SELECT * FROM rounds WHERE task_id = ? AND round = ?", task_id, round_)
        return self._round(rows[0]) if rows else None

    def latest_round(self, task_id: int) -> RoundRow | None:
        rows = self._rows("SELECT * FROM rounds WHERE task_id = ? ORDER BY round DESC LIMIT 1", task_id)
        return self._round(rows[0]) if rows else None

    def open_round(self, task_id: int, round_: int, global_cid: str, global_digest: str, selected: list[int]) -> None:
        """Open ``round_`` and expire the task's earlier rounds still open or closing."""
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET phase = 'expired' WHERE task_id = ? AND round < ? AND phase IN ('open', 'closing')",
                (task_id, round_),
            )
            db.execute(
                "INSERT INTO rounds VALUES (?, ?, 'open', ?, ?, ?, NULL, NULL)",
                (task_id, round_, global_cid, global_digest, json.dumps(selected)),
            )

    def _reachable(self, db: sqlite3.Connection, reach: Callable[[int], int], open_rows: list[tuple]) -> list[tuple]:
        """(task, round, selected, open) of the rounds a report may still enter from here:
        every open round, and in a task where ``reach(task)`` = τ_max > 0 (asynchronous)
        each closed round among the task's last τ_max."""
        rows = list(open_rows)
        for task_id, newest in db.execute("SELECT task_id, MAX(round) FROM rounds GROUP BY task_id").fetchall():
            if (back := reach(task_id)) > 0:
                rows += db.execute(
                    "SELECT task_id, round, selected, 0 FROM rounds WHERE task_id = ? AND round >= ? AND phase != 'open'",
                    (task_id, newest - back),
                ).fetchall()
        return rows

    def release_trainer(self, vehicle: int, reach: Callable[[int], int] = lambda task_id: 0) -> list[tuple[int, int]]:
        """Drop ``vehicle`` (it moved to another edge) from the trainers of every round a
        report of it may still enter from here (:meth:`_reachable`) that has no upload of it
        (open: into the round; closed: trained from it). Returns those (task, round)."""
        released = []
        with self._tx() as db:
            open_rows = db.execute("SELECT task_id, round, selected, 1 FROM rounds WHERE phase = 'open'").fetchall()
            for task_id, round_, selected_json, is_open in self._reachable(db, reach, open_rows):
                selected = json.loads(selected_json)
                uploaded = db.execute(
                    f"SELECT 1 FROM updates WHERE task_id = ? AND vehicle = ? AND {'round' if is_open else 'base'} = ?",
                    (task_id, vehicle, round_),
                ).fetchone()
                if vehicle in selected and not uploaded:
                    selected.remove(vehicle)
                    db.execute(
                        "UPDATE rounds SET selected = ? WHERE task_id = ? AND round = ?",
                        (json.dumps(selected), task_id, round_),
                    )
                    released.append((task_id, round_))
        return released

    def adopt_trainer(
        self, vehicle: int, rounds: list[tuple[int, int]], reach: Callable[[int], int] = lambda task_id: 0
    ) -> None:
        """Add ``vehicle``, handed over by the edge that selected it, to those of ``rounds``
        a report may still enter from here (:meth:`_reachable`, the rule the releasing edge
        applies): a previous edge that names other rounds gains the vehicle nothing."""
        with self._tx() as db:
            open_rows = db.execute("SELECT task_id, round, selected, 1 FROM rounds WHERE phase = 'open'").fetchall()
            wanted = set(rounds)
            for task_id, round_, selected_json, _ in self._reachable(db, reach, open_rows):
                if (task_id, round_) in wanted and vehicle not in (selected := json.loads(selected_json)):
                    db.execute(
                        "UPDATE rounds SET selected = ? WHERE task_id = ? AND round = ?",
                        (json.dumps(sorted(selected + [vehicle])), task_id, round_),
                    )

    def begin_close(self, task_id: int, round_: int) -> list[UpdateRow]:
        """Stop accepting uploads for the round; returns its updates (by vehicle index)."""
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET phase = 'closing' WHERE task_id = ? AND round = ? AND phase = 'open'",
                (task_id, round_),
            )
            rows = db.execute(
                "SELECT * FROM updates WHERE task_id = ? AND round = ? ORDER BY vehicle", (task_id, round_)
            ).fetchall()
        return [UpdateRow(*r) for r in rows]

    def finish_close(self, task_id: int, round_: int, close_json: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET phase = 'closed', close = ? WHERE task_id = ? AND round = ?",
                (close_json, task_id, round_),
            )

    def finish_scores(self, task_id: int, round_: int, scores_json: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET phase = 'scored', scores = ? WHERE task_id = ? AND round = ?",
                (scores_json, task_id, round_),
            )

    # updates
    def add_update(self, row: UpdateRow) -> str | None:
        """Insert an accepted update; returns ``None`` once it is committed, or
        ``"round_not_open"`` / ``"duplicate"`` when it cannot be inserted (nothing is
        written then). Concurrent callers share one transaction, and so one fsync (group
        commit): the first to find no commit under way commits every waiting row, in
        arrival order, each with its own checks, and all return after that commit."""
        entry = _Pending(row)
        with self._group:
            self._queue.append(entry)
            while not entry.done:
                if self._committing:
                    self._group.wait()
                    continue
                batch, self._queue, self._committing = self._queue, [], True
                self._group.release()
                try:
                    self._commit(batch)
                finally:
                    self._group.acquire()
                    self._committing = False
                    self._group.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.refused

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch``; each entry gets its answer (or the commit's error)."""
        try:
            with self._tx() as db:
                for entry in batch:
                    entry.refused = self._insert_update(db, entry.row)
        except Exception as exc:
            for entry in batch:
                entry.refused, entry.error = None, exc
        for entry in batch:
            entry.done = True

    @staticmethod
    def _insert_update(db: sqlite3.Connection, row: UpdateRow) -> str | None:
        phase = db.execute("SELECT phase FROM rounds WHERE task_id = ? AND round = ?", (row.task_id, row.round)).fetchone()
        if phase is None or phase[0] != "open":
            return "round_not_open"
        exists = db.execute(  # one update per round, and one per base version (its signature)
            "SELECT 1 FROM updates WHERE task_id = ? AND vehicle = ? AND (round = ? OR base = ?)",
            (row.task_id, row.vehicle, row.round, row.base),
        ).fetchone()
        if exists:
            return "duplicate"
        db.execute("INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(row.__dict__.values()))
        return None

    def update_of(self, task_id: int, round_: int, vehicle: int, base: int) -> UpdateRow | None:
        """``vehicle``'s update in ``round_`` or the one it trained from ``base``, if any."""
        sql = "SELECT * FROM updates WHERE task_id = ? AND vehicle = ? AND (round = ? OR base = ?)"
        rows = self._rows(sql, task_id, vehicle, round_, base)
        return UpdateRow(*rows[0]) if rows else None

    def updates(self, task_id: int, round_: int) -> list[UpdateRow]:
        rows = self._rows("SELECT * FROM updates WHERE task_id = ? AND round = ? ORDER BY vehicle", task_id, round_)
        return [UpdateRow(*r) for r in rows]

    def uploaders(self, task_id: int, round_: int) -> list[int]:
        """The vehicles with an update in the round, in order (read from the index alone)."""
        return [r[0] for r in self._rows("SELECT vehicle FROM updates WHERE task_id = ? AND round = ? ORDER BY vehicle", task_id, round_)]

    def update_count(self, task_id: int, round_: int) -> int:
        """How many vehicles have an update in the round, counted inside SQLite: what every
        accepted upload may ask (0.06 ms at 600 updates, where :meth:`updates` takes 4 ms)."""
        return self._rows("SELECT COUNT(*) FROM updates WHERE task_id = ? AND round = ?", task_id, round_)[0][0]
