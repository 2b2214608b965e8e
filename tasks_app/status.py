"""Task statuses and the rules between them. Pure functions: no database, no Django."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    PENDING = "pending"  # Kadalu: Queued
    RECEIVED = "received"  # Kadalu: Received (a node has picked it up)
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in Status)
TERMINAL: frozenset[str] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# How far along the life of a task each status is. An update may only move a task forward,
# so a late or duplicated message can never move it backwards.
_RANK = {
    Status.PENDING: 0,
    Status.RECEIVED: 1,
    Status.IN_PROGRESS: 2,
    Status.COMPLETED: 3,
    Status.FAILED: 3,
    Status.CANCELLED: 3,
}


class Verdict(str, Enum):
    APPLY = "apply"  # a real status change: write it and its history row
    SAME = "same"  # already in that status: may refresh task_status_data, no history row
    REJECT = "reject"  # not allowed from the current status


def is_valid_status(value: object) -> bool:
    return isinstance(value, str) and value in STATUS_VALUES


def judge(current: str, target: str, *, retry: bool = False) -> Verdict:
    """Decide whether a task in `current` may move to `target`.

    - terminal statuses stay terminal; the one way out is an explicit retry, failed -> pending;
    - otherwise a task only moves forward (pending -> received -> in_progress -> final);
    - cancelled may follow any non-final status.
    """
    cur, tgt = Status(current), Status(target)
    if retry:
        return Verdict.APPLY if (cur, tgt) == (Status.FAILED, Status.PENDING) else Verdict.REJECT
    if cur == tgt:
        return Verdict.SAME
    if cur in TERMINAL:
        return Verdict.REJECT
    if _RANK[tgt] > _RANK[cur]:
        return Verdict.APPLY
    return Verdict.REJECT
