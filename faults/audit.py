"""After an experiment: wait (bounded) for its tasks to settle, then count, from the database and from what
the nodes keep on their own disks, what went wrong.

* lost: a create the API accepted (200) whose task is not in the table.
* run twice: a run whose handler finished more than once: two `completed` history rows for one run, two
  successful ledger outcomes for one run (workers/node/guard.py, on any nodes), or two lines for one run in
  a node's execution log (faults/handlers.py fault_work).
* moved backwards: a history row that goes back (a lower status, or out of a final one other than an
  explicit retry's failed/cancelled -> pending), or that does not start where the task's previous row ended.
* stuck: a task not in a final status when the settle time is up; each is explained from its node's
  ledger and outbox (did the handler finish? is its report still waiting to be sent?).
* recovery: from the end of the fault (the moment the killed process or the dependency is started again)
  until the last of the experiment's tasks created before then reached a final status.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from faults import EXECUTIONS_LOG
from workers.protocol.status import TERMINAL, Status

_RANK = {
    Status.PENDING: 0, Status.RECEIVED: 1, Status.IN_PROGRESS: 2, Status.CANCELLING: 3,
    Status.COMPLETED: 4, Status.FAILED: 4, Status.CANCELLED: 4,
}  # fmt: skip
_RETRY_FROM = {Status.FAILED.value, Status.CANCELLED.value}
_CHUNK = 500
SLOW_SECONDS = 30.0  # a task slower than this from create to final status is named in the notes
T = TypeVar("T")


@dataclass
class Row:
    experiment: str
    submitted: int
    terminal: int = 0
    lost: int = 0
    run_twice: int = 0
    backwards: int = 0
    stuck: int = 0
    recovery: float | None = None  # seconds; None: no fault to recover from, or not recovered
    api: str = "-"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "experiment": self.experiment, "submitted": self.submitted, "terminal": self.terminal,
            "lost": self.lost, "run_twice": self.run_twice, "moved_backwards": self.backwards,
            "stuck": self.stuck, "recovery_seconds": self.recovery, "api": self.api, "notes": self.notes,
        }  # fmt: skip


@dataclass(frozen=True)
class Task:
    task_id: str
    status: str
    node: str
    run_id: str


@dataclass(frozen=True)
class Change:
    task_id: str
    from_status: str
    to_status: str
    at: float
    run_id: str


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _with_database_retry(read: Callable[[], T], timeout: float = 60.0) -> T:
    """read() again while the database is away (an experiment may have just restarted it)."""
    from django.db import DatabaseError, close_old_connections, connections

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            for conn in connections.all():
                conn.close()
            close_old_connections()
            time.sleep(0.5)


def tasks(ids: list[str]) -> dict[str, Task]:
    from tasks_app.tasks.models import GlobalTask

    def read() -> dict[str, Task]:
        found: dict[str, Task] = {}
        for chunk in _chunks(ids):
            for tid, status, node, run in GlobalTask.objects.filter(task_id__in=chunk).values_list(
                "task_id", "task_status", "node", "run_id"
            ):
                found[tid] = Task(tid, status, node, run)
        return found

    return _with_database_retry(read)


def history(ids: list[str]) -> dict[str, list[Change]]:
    from tasks_app.tasks.models import TaskStatusChange

    def read() -> dict[str, list[Change]]:
        rows: dict[str, list[Change]] = defaultdict(list)
        for chunk in _chunks(ids):
            query = TaskStatusChange.objects.filter(task_id__in=chunk).order_by("task_id", "at", "id")
            for tid, frm, to, at, run in query.values_list("task_id", "from_status", "to_status", "at", "run_id"):
                rows[tid].append(Change(tid, frm, to, at.timestamp(), run))
        return dict(rows)

    return _with_database_retry(read)


def settle(ids: list[str], accepted: set[str], timeout: float) -> dict[str, Task]:
    """Wait until every accepted task exists and every task is final, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        found = tasks(ids)
        settled = accepted <= found.keys() and all(t.status in TERMINAL for t in found.values())
        if settled or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def moved_backwards(changes: Iterable[Change]) -> int:
    count, previous = 0, None
    for change in changes:
        if change.from_status:
            frm, to = Status(change.from_status), Status(change.to_status)
            retry = frm in _RETRY_FROM and to == Status.PENDING
            went_back = not retry and (_RANK[to] < _RANK[frm] or frm.value in TERMINAL)
            out_of_order = previous is not None and change.from_status != previous.to_status
            count += went_back or out_of_order
        previous = change
    return count


class NodeRecords:
    """What the nodes keep about runs on their own disks: ledger outcomes, execution log lines, outboxes."""

    def __init__(self, node_dirs: dict[str, Path]) -> None:
        self.node_dirs = node_dirs

    def outcomes(self, run_ids: set[str]) -> dict[str, list[tuple[str, bool]]]:
        """run id -> [(node, ok)] for each recorded outcome of the run's own handler (not parts)."""
        found: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        for node, data_dir in self.node_dirs.items():
            runs = data_dir / ".taskhub" / "runs"
            if not runs.is_dir():
                continue
            for path in runs.glob("*.done.json"):
                parts = path.name.split(".")
                # <run_id>.<retries>.done.json: the run itself; a fan-out part or undo has one more field.
                if len(parts) != 4 or parts[0] not in run_ids:
                    continue
                try:
                    ok = bool(json.loads(path.read_text()).get("ok"))
                except (OSError, ValueError):
                    continue
                found[parts[0]].append((node, ok))
        return dict(found)

    def executions(self) -> Counter[str]:
        """run id -> how many times fault_work's handler finished it, on all nodes together."""
        counts: Counter[str] = Counter()
        for data_dir in self.node_dirs.values():
            log = data_dir / EXECUTIONS_LOG
            if log.exists():
                counts.update(line.split()[0] for line in log.read_text().splitlines() if line.strip())
        return counts

    def unsent(self, node: str) -> set[str]:
        """The runs with a report in the node's outbox, not yet on the update stream."""
        path = self.node_dirs.get(node, Path("/nonexistent")) / ".taskhub" / "outbox.sqlite3"
        if not path.exists():
            return set()
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                return {str(r[0]) for r in db.execute("SELECT DISTINCT run_id FROM report")}
        except sqlite3.Error:
            return set()


def audit(
    name: str,
    submitted: list[str],
    accepted: set[str],
    records: NodeRecords,
    *,
    settle_seconds: float,
    fault_end: float | None,
    api: str = "-",
) -> tuple[Row, dict[str, Task]]:
    """Settle, then count. Returns the row and the final state of the tasks (for the experiment's own checks)."""
    found = settle(submitted, accepted, settle_seconds)
    changes = history(list(found))
    row = Row(name, submitted=len(submitted), api=api)
    row.terminal = sum(1 for t in found.values() if t.status in TERMINAL)
    row.lost = len(accepted - found.keys())
    unanswered = len(set(submitted) - accepted - found.keys())
    if unanswered:
        row.notes.append(f"{unanswered} create(s) never answered and not in the table (not accepted, not lost)")
    row.backwards = sum(moved_backwards(rows) for rows in changes.values())

    runs = {c.run_id for rows in changes.values() for c in rows if c.run_id}
    twice: set[str] = set()
    completed_rows = Counter((c.task_id, c.run_id) for rs in changes.values() for c in rs if c.to_status == "completed")
    twice |= {run for (_tid, run), n in completed_rows.items() if n > 1}
    outcomes = records.outcomes(runs)
    twice |= {run for run, seen in outcomes.items() if sum(ok for _n, ok in seen) > 1}
    twice |= {run for run, n in records.executions().items() if n > 1 and run in runs}
    row.run_twice = len(twice)

    slow = _slow({tid: rows for tid, rows in changes.items() if found[tid].node})  # executed tasks only
    if slow:
        row.notes.append(slow)
    stuck = [t for t in found.values() if t.status not in TERMINAL]
    row.stuck = len(stuck)
    if stuck:
        row.notes.append("stuck: " + _explain(stuck, outcomes, records))
    elif fault_end is not None:
        # Tasks created after the fault ended are ordinary traffic: they say nothing about the recovery.
        before = {tid for tid, rs in changes.items() if rs and rs[0].at <= fault_end}
        ends = [c.at for tid in before for c in changes[tid] if c.to_status in TERMINAL]
        row.recovery = max(0.0, max(ends) - fault_end) if ends else 0.0
    return row, found


def _slow(changes: dict[str, list[Change]]) -> str:
    """Executed tasks that took over SLOW_SECONDS to end, and how many of those waited that long still pending (no
    node had reported receiving them): what a long recovery time is made of."""
    took: list[float] = []
    waited = 0
    for rows in changes.values():
        if not rows or rows[0].from_status:
            continue
        created = rows[0].at
        ends = [c.at for c in rows if c.to_status in TERMINAL]
        if not ends or ends[-1] - created <= SLOW_SECONDS:
            continue
        took.append(ends[-1] - created)
        received = [c.at for c in rows if c.from_status == "pending" and c.to_status != "cancelled"]
        waited += bool(received and received[0] - created > SLOW_SECONDS)
    if not took:
        return ""
    return (
        f"{len(took)} task(s) took over {SLOW_SECONDS:g} s to end (longest {max(took):.0f} s); {waited} of them "
        f"waited that long in pending, with no node reporting it received"
    )


def _explain(stuck: list[Task], outcomes: dict[str, list[tuple[str, bool]]], records: NodeRecords) -> str:
    reasons: Counter[str] = Counter()
    unsent = {node: records.unsent(node) for node in records.node_dirs}
    for task in stuck:
        seen = outcomes.get(task.run_id, [])
        ledger = "finished ok" if any(ok for _n, ok in seen) else "failed" if seen else "no outcome"
        outbox = "report in outbox" if task.run_id in unsent.get(task.node, set()) else "outbox empty"
        reasons[f"{task.status} on {task.node or '-'} (ledger: {ledger}; {outbox})"] += 1
    return "; ".join(f"{n} {reason}" for reason, n in reasons.most_common())
