"""Task statuses, their aliases, and the rules between them. Pure functions: no database, no Django.

The server's one transition function (tasks_app/tasks/transitions.py) asks `judge` about every status
change; nodes use the names when they report.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    PENDING = "pending"  # Kadalu: Queued
    RECEIVED = "received"  # Kadalu: Received (a node has picked it up)
    IN_PROGRESS = "in_progress"
    # A running executed task asked to stop: not final until its node confirms (Procrastinate's
    # "aborting"). It ends cancelled, or as the run ended if the run finished first.
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in Status)
TERMINAL: frozenset[str] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
UNFINISHED: tuple[Status, ...] = (Status.PENDING, Status.RECEIVED, Status.IN_PROGRESS, Status.CANCELLING)
# A task its node may be working on.
RUNNING: tuple[Status, ...] = (Status.RECEIVED, Status.IN_PROGRESS, Status.CANCELLING)
# What a client may write (create, PUT, /task_update). `cancelling` is set by a cancel only.
CLIENT_VALUES: tuple[str, ...] = tuple(s for s in STATUS_VALUES if s != Status.CANCELLING)

# Names the reference service's real callers and Kadalu send, and what they mean. Matching is also
# case-insensitive ("Completed", Kadalu's "Queued").
ALIASES: dict[str, Status] = {
    "complete": Status.COMPLETED,  # a model-splits executor reports "complete"
    "queued": Status.PENDING,  # Kadalu's name for pending
}

# How far along the life of a task each status is. An update may only move a task forward,
# so a late or duplicated message can never move it backwards.
_RANK = {
    Status.PENDING: 0,
    Status.RECEIVED: 1,
    Status.IN_PROGRESS: 2,
    Status.CANCELLING: 3,
    Status.COMPLETED: 4,
    Status.FAILED: 4,
    Status.CANCELLED: 4,
}


class Verdict(str, Enum):
    APPLY = "apply"  # a real status change: write it and its history row
    SAME = "same"  # already in that status: may refresh task_status_data, no history row
    REJECT = "reject"  # not allowed from the current status, or not by this writer
    STALE = "stale"  # a node's report for a run that is not the task's current run: ignored


def canonical(value: object) -> str | None:
    """The status a name means (an alias or a different case allowed), or None if it is none."""
    if not isinstance(value, str):
        return None
    if value in STATUS_VALUES:
        return value
    lowered = value.strip().lower()
    if lowered in STATUS_VALUES:
        return lowered
    alias = ALIASES.get(lowered)
    return alias.value if alias is not None else None


def judge(current: str, target: str, *, retry: bool = False, move: bool = False) -> Verdict:
    """Decide whether a task in `current` may move to `target`.

    - final statuses stay final; the one way out is an explicit retry, failed or cancelled -> pending;
    - a move (a new run on another node) takes a pending task to pending, and nothing else;
    - otherwise a task only moves forward (pending -> received -> in_progress -> final);
    - cancelling may follow any unfinished status, and ends in any final one.
    """
    cur, tgt = Status(current), Status(target)
    if move:
        return Verdict.APPLY if cur == tgt == Status.PENDING else Verdict.REJECT
    if retry:
        ok = cur in (Status.FAILED, Status.CANCELLED) and tgt == Status.PENDING
        return Verdict.APPLY if ok else Verdict.REJECT
    if cur == tgt:
        return Verdict.SAME
    if cur in TERMINAL:
        return Verdict.REJECT
    if _RANK[tgt] > _RANK[cur]:
        return Verdict.APPLY
    return Verdict.REJECT


def judge_initial(target: str, *, executed: bool) -> Verdict:
    """Whether a task may be created in `target`: an executed task starts pending, since its node
    reports every later status; a tracked record may start in any status its caller gives, as the
    reference service allowed, except cancelling (a cancel's own state)."""
    tgt = Status(target)
    if executed:
        return Verdict.APPLY if tgt == Status.PENDING else Verdict.REJECT
    return Verdict.REJECT if tgt == Status.CANCELLING else Verdict.APPLY
