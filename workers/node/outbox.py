"""A node's outbox: every report, on local disk, until the update stream has it.

A report is committed here (SQLite; a run's outcome with `synchronous=FULL`: on disk before `put`
returns) and only then sent, by the sender thread (workers/node/sender.py), which deletes it once Redis
has answered XADD with an id. So an outcome survives a Redis outage of any length and a crash of the node worker: the
next worker on this data dir sends what the last one had not delivered.

`seq` never repeats (AUTOINCREMENT), and reports go out in `seq` order, so one run's reports reach
the stream in the order they were made. The node has no Django database; this is a plain sqlite3
file under the node's bookkeeping dir (`<data_dir>/.taskhub/outbox.sqlite3`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.status import TERMINAL

log = logging.getLogger(__name__)

FILENAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unreadable (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    body TEXT NOT NULL,
    error TEXT NOT NULL,
    moved_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    seq: int
    update: StatusUpdate


class Outbox:
    """One file, shared by the threads of a worker (one connection, behind a lock) and safe to open
    from another process too (SQLite's own locking; the busy timeout waits it out)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Autocommit: each statement is its own transaction, committed (and fsync'd) when it returns.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL, not WAL's usual NORMAL: a report must be on disk before anything else happens,
            # or a power cut could lose the outcome the message's acknowledgement gave up on.
            self._db.execute("PRAGMA synchronous=FULL")
            self._full = True
            self._db.executescript(_SCHEMA)

    def put(self, update: StatusUpdate) -> int:
        """Keep one report. Returns its sequence number.

        A run's outcome (a final status) is on disk before this returns (synchronous=FULL: fsync'd), since
        its message is acknowledged next. Any other report (received, in_progress) survives the worker's
        crash but not a power cut (synchronous=NORMAL: no fsync), which costs nothing: the message of a run
        without its outcome is not acknowledged, so the run is delivered again and reports again."""
        body = json.dumps({**asdict(update), "origin": update.origin.value}, separators=(",", ":"))
        with self._lock:
            self._sync(full=update.status in TERMINAL)
            cursor = self._db.execute("INSERT INTO report (run_id, body) VALUES (?, ?)", (update.run_id, body))
        return int(cursor.lastrowid or 0)

    def _sync(self, *, full: bool) -> None:
        """Under the lock: FULL or NORMAL for the next commit (a commit in FULL syncs every earlier one)."""
        if full != self._full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def pending(self, limit: int = 1000) -> list[Pending]:
        """The oldest reports not yet delivered, oldest first. A row this version cannot read (written by
        another version, or damaged) is set aside in the `unreadable` table, with the reason and logged,
        rather than stopping every report behind it; the stalled-run sweep then judges its run from the
        node's ledger (tasks_app/fleet/stalled.py)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, run_id, body FROM report ORDER BY seq LIMIT ?", (limit,)).fetchall()
            readable: list[Pending] = []
            for seq, run_id, body in rows:
                try:
                    readable.append(Pending(int(seq), _decode(body)))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    self._set_aside(int(seq), str(run_id), str(body), f"{type(exc).__name__}: {exc}")
        return readable

    def _set_aside(self, seq: int, run_id: str, body: str, error: str) -> None:
        """Under the lock: one row moved to `unreadable`, in one transaction."""
        log.error("outbox %s: report %s of run %s cannot be read (%s); set aside in `unreadable`", self.path, seq,
                  run_id, error)  # fmt: skip
        self._sync(full=True)
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO unreadable (seq, run_id, body, error, moved_at) VALUES (?, ?, ?, ?, ?)",
                (seq, run_id, body, error, time.time()),
            )
            self._db.execute("DELETE FROM report WHERE seq = ?", (seq,))

    def unreadable(self) -> list[tuple[int, str, str]]:
        """What was set aside: (seq, run_id, error), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, run_id, error FROM unreadable ORDER BY seq").fetchall()
        return [(int(seq), str(run_id), str(error)) for seq, run_id, error in rows]

    def pending_runs(self) -> set[str]:
        """The runs with a report this node has not delivered yet (an outcome, maybe, still on its way)."""
        with self._lock:
            return {str(r[0]) for r in self._db.execute("SELECT DISTINCT run_id FROM report").fetchall()}

    def delete(self, seqs: list[int]) -> None:
        """Forget reports the stream has (or that must never be sent): one transaction."""
        if not seqs:
            return
        with self._lock:
            # Not synced: a delete lost to a power cut sends those reports again, which is harmless.
            self._sync(full=False)
            with self._transaction():
                self._db.executemany("DELETE FROM report WHERE seq = ?", [(s,) for s in seqs])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Under the lock: the statements inside as one transaction (the connection is in autocommit)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


_FIELDS = frozenset(f.name for f in fields(StatusUpdate))


def _decode(body: str) -> StatusUpdate:
    stored = json.loads(body)
    steps = tuple((str(status), float(at)) for status, at in stored.get("steps", ()))
    # Fields this version does not know (a report put by a newer one) are left out, not fatal.
    known = {k: v for k, v in stored.items() if k in _FIELDS}
    return StatusUpdate(**{**known, "origin": Origin(stored["origin"]), "steps": steps})


_open: dict[Path, Outbox] = {}
_open_lock = threading.Lock()


def at(state_dir: Path) -> Outbox:
    """This process's outbox in a node's bookkeeping dir (one per file, opened once)."""
    path = state_dir / FILENAME
    with _open_lock:
        box = _open.get(path)
        if box is None:
            box = _open[path] = Outbox(path)
        return box
