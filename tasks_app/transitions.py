"""The one transition function. Every status change, from any writer, goes through here.

It locks the rows it changes (SELECT ... FOR UPDATE, in task_id order so two callers cannot
deadlock), judges each requested change against the status rules, and writes the new status and
one history row per change. A batch of updates and a single update take the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from tasks_app.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.status import TERMINAL, Verdict, judge


@dataclass(frozen=True)
class StatusUpdate:
    task_id: str
    status: str
    # None keeps the stored task_status_data; a dict replaces it.
    status_data: dict[str, Any] | None = None
    source: str = ""
    # Only an explicit retry may take a failed task back to pending.
    retry: bool = False


@dataclass(frozen=True)
class Outcome:
    task_id: str
    verdict: Verdict | None  # None: no such task
    from_status: str = ""
    to_status: str = ""


@dataclass
class _State:
    status: str
    status_data: Any
    dirty: bool = False
    history: list[TaskStatusChange] = field(default_factory=list)


def task_transition_many(*, updates: Sequence[StatusUpdate]) -> list[Outcome]:
    """Apply status updates in the given order, inside one transaction. Returns one Outcome each."""
    if not updates:
        return []
    with transaction.atomic():
        ids = sorted({u.task_id for u in updates})
        rows = (
            GlobalTask.objects.select_for_update()
            .filter(task_id__in=ids)
            .order_by("task_id")
            .values_list("task_id", "task_status", "task_status_data")
        )
        states = {tid: _State(status, data) for tid, status, data in rows}
        at = datetime.now(UTC)
        outcomes: list[Outcome] = []
        for u in updates:
            state = states.get(u.task_id)
            if state is None:
                outcomes.append(Outcome(u.task_id, None))
                continue
            before = state.status
            verdict = judge(before, u.status, retry=u.retry)
            if verdict is Verdict.APPLY:
                state.status = u.status
                state.dirty = True
                state.history.append(
                    TaskStatusChange(
                        task_id=u.task_id, from_status=before, to_status=u.status, at=at, source=u.source[:128]
                    )
                )
                if u.status_data is not None:
                    state.status_data = u.status_data
            elif verdict is Verdict.SAME and u.status_data is not None and not _is_final(before):
                # A repeated non-final status may carry fresh data (progress, say); a final
                # status is settled and a duplicate of it changes nothing.
                state.status_data = u.status_data
                state.dirty = True
            outcomes.append(Outcome(u.task_id, verdict, before, state.status))
        _write(states)
    return outcomes


def task_transition(*, update: StatusUpdate) -> Outcome:
    """One status change: the same function as a batch of one."""
    return task_transition_many(updates=[update])[0]


def _is_final(status: str) -> bool:
    return status in TERMINAL


def _write(states: dict[str, _State]) -> None:
    dirty = [(tid, s) for tid, s in states.items() if s.dirty]
    if not dirty:
        return
    ts = now_ts()
    json_field = GlobalTask._meta.get_field("task_status_data")
    params = [
        (s.status, json_field.get_db_prep_value(s.status_data, connection), ts, tid) for tid, s in dirty
    ]
    # executemany: one round trip per batch on psycopg 3 (pipeline mode) and on SQLite; Django's
    # bulk_update would build a CASE per column, which grows quadratically with the batch.
    # The table name is our own constant; every value is a parameter.
    sql = f"UPDATE {GlobalTask._meta.db_table} SET task_status = %s, task_status_data = %s, "  # noqa: S608
    sql += "task_update_timestamp = %s WHERE task_id = %s"
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
    history = [h for _, s in dirty for h in s.history]
    if history:
        TaskStatusChange.objects.bulk_create(history)
