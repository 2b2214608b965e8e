"""How long each run of a task spent at each step, read from its history rows (global_task_history).

A run is the rows that share a run_id (tracked tasks have none: their rows make one run with run_id "").
It begins with the row that created, retried or moved the task, and ends with its final status, or when
the next run began (a move takes a pending task to another node: the old run never ran). The steps:
queue wait (began -> picked up: received, else in_progress), received -> in_progress, run time
(in_progress -> ended) and end to end (began -> ended). A step the run skipped or has not reached is None.

The admin's task page shows these; the API may answer them too: nothing here writes, nothing is Django
admin specific.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from tasks_app.models import TaskStatusChange
from workers.protocol.status import TERMINAL, Status


class HistoryRow(Protocol):
    """What a run is read from: a TaskStatusChange, or anything shaped like one (for tests)."""

    @property
    def run_id(self) -> str: ...
    @property
    def from_status(self) -> str: ...
    @property
    def to_status(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class RunTiming:
    run_id: str
    began: str  # "created", "retried" (after a final status: a retry, or a dead node's task moved) or "moved"
    began_at: datetime
    began_by: str  # the source of the row that began it
    statuses: tuple[str, ...]  # the statuses it went through, in order
    outcome: str  # its final status; "moved" when a move ended it; else the status it is in now
    received_at: datetime | None = None
    in_progress_at: datetime | None = None
    ended_at: datetime | None = None  # its final status, or the start of the run that replaced it

    @property
    def picked_up_at(self) -> datetime | None:
        return self.received_at or self.in_progress_at

    @property
    def queue_wait(self) -> timedelta | None:
        return _between(self.began_at, self.picked_up_at)

    @property
    def received_to_in_progress(self) -> timedelta | None:
        return _between(self.received_at, self.in_progress_at)

    @property
    def run_time(self) -> timedelta | None:
        return _between(self.in_progress_at, self.ended_at)

    @property
    def end_to_end(self) -> timedelta | None:
        return _between(self.began_at, self.ended_at)


def _between(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start is not None and end is not None else None


def _began(from_status: str, to_status: str) -> str:
    if not from_status:
        return "created"
    if from_status in TERMINAL:
        return "retried"
    if from_status == to_status == Status.PENDING:
        return "moved"
    return from_status  # a run whose first row is not a start (rows from before run ids): say where it was


def runs_from(rows: Iterable[HistoryRow]) -> list[RunTiming]:
    """The runs of one task's history rows, given in (at, id) order; oldest run first."""
    groups: dict[str, list[HistoryRow]] = {}
    for row in rows:
        groups.setdefault(row.run_id, []).append(row)
    ordered = list(groups.values())
    runs: list[RunTiming] = []
    for index, group in enumerate(ordered):
        following = ordered[index + 1][0] if index + 1 < len(ordered) else None
        runs.append(_run(group, following))
    return runs


def _run(rows: list[HistoryRow], following: HistoryRow | None) -> RunTiming:
    first = rows[0]
    first_at: dict[str, datetime] = {}
    for row in rows:
        first_at.setdefault(row.to_status, row.at)
    final = next((row for row in rows if row.to_status in TERMINAL), None)
    if final is not None:
        outcome, ended_at = final.to_status, final.at
    elif following is not None:
        # Replaced without a final status of its own: a move of a pending task.
        outcome, ended_at = _began(following.from_status, following.to_status), following.at
    else:
        outcome, ended_at = rows[-1].to_status, None
    return RunTiming(
        run_id=first.run_id,
        began=_began(first.from_status, first.to_status),
        began_at=first.at,
        began_by=first.source,
        statuses=tuple(row.to_status for row in rows),
        outcome=outcome,
        received_at=first_at.get(Status.RECEIVED.value),
        in_progress_at=first_at.get(Status.IN_PROGRESS.value),
        ended_at=ended_at,
    )


def run_timings(task_id: str) -> list[RunTiming]:
    """Each run of the task, oldest first, with its steps' times (one query; [] for an unknown task)."""
    rows = TaskStatusChange.objects.filter(task_id=task_id).order_by("at", "id")
    return runs_from(rows.only("run_id", "from_status", "to_status", "at", "source"))


def total_time(runs: list[RunTiming]) -> timedelta | None:
    """From the first run's start to the last one's final status (None while unfinished)."""
    if not runs or runs[-1].outcome not in TERMINAL:
        return None
    return _between(runs[0].began_at, runs[-1].ended_at)
