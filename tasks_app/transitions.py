"""The one transition function. Every status change, from any writer, goes through here.

It locks the rows it changes (SELECT ... FOR UPDATE, in task_id order so two callers cannot
deadlock), judges each requested change against the status rules, and writes the new status and
one history row per change. A batch of updates and a single update take the same path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction

from tasks_app import metrics
from tasks_app.hooks import has_completion_hook, run_completion_hook
from tasks_app.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.status import TERMINAL, Status, Verdict, judge

log = logging.getLogger(__name__)


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
    task_type: str
    task_data: Any
    order_key: str = ""
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
            .values_list("task_id", "task_status", "task_status_data", "task_type", "task_data", "order_key")
        )
        states = {row[0]: _State(*row[1:]) for row in rows}
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
                target, data = u.status, u.status_data
                if target == Status.COMPLETED:
                    target, data = _complete(u.task_id, state, data)
                state.status = target
                state.dirty = True
                state.history.append(
                    TaskStatusChange(
                        task_id=u.task_id, from_status=before, to_status=target, at=at, source=u.source[:128]
                    )
                )
                if data is not None:
                    state.status_data = data
            elif verdict is Verdict.SAME and u.status_data is not None and not _is_final(before):
                # A repeated non-final status may carry fresh data (progress, say); a final
                # status is settled and a duplicate of it changes nothing.
                state.status_data = u.status_data
                state.dirty = True
            outcomes.append(Outcome(u.task_id, verdict, before, state.status))
        _write(states)
        applied = [(states[o.task_id].task_type, o.to_status) for o in outcomes if o.verdict is Verdict.APPLY]
        metrics.count_finished(applied)  # the final ones, on commit (taskhub_tasks_finished_total)
        # A finished task may be what the next task of its order key waits for.
        keys = {s.order_key for s in states.values() if s.dirty and s.order_key and s.status in TERMINAL}
        for key in sorted(keys):
            transaction.on_commit(partial(_release_next, key))
    return outcomes


def _release_next(order_key: str) -> None:
    from tasks_app.dispatch import publish_next

    publish_next(order_key)


def task_transition(*, update: StatusUpdate) -> Outcome:
    """One status change: the same function as a batch of one."""
    return task_transition_many(updates=[update])[0]


def _complete(task_id: str, state: _State, data: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """Run the type's completion hook in a savepoint. If the record cannot be written (a volume
    name taken meanwhile, say), the task fails with that reason instead of claiming success."""
    if not has_completion_hook(state.task_type):
        return Status.COMPLETED.value, data  # nothing to write: no savepoint (two round trips) either
    try:
        with transaction.atomic():
            run_completion_hook(state.task_type, task_id, state.task_data or {}, data or {})
    except (OperationalError, InterfaceError):
        raise  # the database itself is in trouble: retry the whole batch, fail nothing
    except Exception as exc:
        log.exception("completion hook of %s %s failed", state.task_type, task_id)
        error = {"type": "CompletionHookError", "message": f"{type(exc).__name__}: {exc}"}
        return Status.FAILED.value, {**(data or {}), "error": error}
    return Status.COMPLETED.value, data


def _is_final(status: str) -> bool:
    return status in TERMINAL


def _write(states: dict[str, _State]) -> None:
    dirty = [(tid, s) for tid, s in states.items() if s.dirty]
    if not dirty:
        return
    ts = now_ts()
    json_field = GlobalTask._meta.get_field("task_status_data")
    # Django's bulk_update would build a CASE per column, which grows quadratically with the batch.
    # The table name is our own constant; every value is a parameter.
    table = GlobalTask._meta.db_table
    if connection.vendor == "postgresql":
        # One statement for the whole batch, parsed and planned once instead of once per row.
        sql = (
            f"UPDATE {table} AS t SET task_status = v.status, task_status_data = v.data, "  # noqa: S608
            "task_update_timestamp = %s "
            "FROM unnest(%s::text[], %s::text[], %s::jsonb[]) AS v(task_id, status, data) WHERE t.task_id = v.task_id"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    ts,
                    [tid for tid, _ in dirty],
                    [s.status for _, s in dirty],
                    [json.dumps(s.status_data, cls=json_field.encoder) for _, s in dirty],
                ],
            )
        _write_history(dirty)
        return
    sql = f"UPDATE {table} SET task_status = %s, task_status_data = %s, task_update_timestamp = %s "  # noqa: S608
    sql += "WHERE task_id = %s"
    params = [(s.status, json_field.get_db_prep_value(s.status_data, connection), ts, tid) for tid, s in dirty]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)  # one round trip per batch on SQLite
    _write_history(dirty)


def _write_history(dirty: list[tuple[str, _State]]) -> None:
    history = [h for _, s in dirty for h in s.history]
    if history:
        TaskStatusChange.objects.bulk_create(history)
