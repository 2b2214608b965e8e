"""The one transition function. Every status change, from any writer, goes through here: a task's
creation (its first status), PUT, /task_update, the writers applying nodes' reports, the admin, the
pull API, retry, cancel and the dead-node sweep.

It locks the rows it changes (SELECT ... FOR UPDATE, in task_id order so two callers cannot
deadlock), screens each requested change by who sent it, judges it against the status rules
(workers/protocol/status.py), and writes the new status and one history row per change, naming the
run it belongs to. A batch of updates and a single update take the same path.

Who may ask for what:
- a node (Origin.NODE) reports on one run of an executed task, and only the task's current run
  counts: a report for any other run (an old attempt, a task deleted and created again under the
  same id) is ignored (Verdict.STALE). Only such a report completes an executed task, and only then
  does the type's completion hook write its record;
- a client (Origin.CLIENT) drives a tracked task through any forward change; an executed task's
  status comes from its node, so a client may only fail it (cancel is a service of its own);
- taskhub itself (Origin.SERVER): cancel, retry, the dead-node sweep, the pull API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from tasks_app.families.registry import completion_hook
from tasks_app.ops import metrics
from tasks_app.tasks.models import GlobalTask, TaskStatusChange, now_ts
from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.status import TERMINAL, Status, Verdict, judge, judge_initial

__all__ = [
    "EXISTS",
    "NewTask",
    "Origin",
    "Outcome",
    "StatusUpdate",
    "task_transition",
    "task_transition_many",
    "verdict_for",
]

log = logging.getLogger(__name__)

EXISTS = "a task with this task_id exists"  # Outcome.reason of a creation that found its id taken


@dataclass(frozen=True)
class NewTask:
    """A creation: the row to insert. Its status is the task's first status change."""

    task: GlobalTask
    source: str = ""


@dataclass(frozen=True)
class Outcome:
    task_id: str
    verdict: Verdict | None  # None: no such task
    from_status: str = ""
    to_status: str = ""
    reason: str = ""  # why a change was refused or ignored


@dataclass
class _State:
    status: str
    status_data: Any
    task_type: str
    task_data: Any
    order_key: str
    node: str
    run_id: str
    dirty: bool = False
    history: list[TaskStatusChange] = field(default_factory=list)


def task_transition(*, update: StatusUpdate | NewTask) -> Outcome:
    """One status change (or a creation): the same function as a batch of one."""
    if isinstance(update, NewTask):
        return _create(update)
    return task_transition_many(updates=[update])[0]


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
            .values_list(
                "task_id", "task_status", "task_status_data", "task_type", "task_data", "order_key", "node", "run_id"
            )
        )
        states = {row[0]: _State(*row[1:]) for row in rows}
        at = datetime.now(UTC)
        outcomes = [_apply(u, states.get(u.task_id), at) for u in updates]
        _write(states)
        applied = [(states[o.task_id].task_type, o.to_status) for o in outcomes if o.verdict is Verdict.APPLY]
        metrics.count_finished(applied)  # the final ones, on commit (taskhub_tasks_finished_total)
        refused = [o for o in outcomes if o.verdict is Verdict.REJECT]
        if refused:
            metrics.count_refused_updates(len(refused))
            for o in refused:
                log.info("refused an update of task %s: %s", o.task_id, o.reason)
        stale = [o for o in outcomes if o.verdict is Verdict.STALE]
        if stale:
            metrics.count_ignored_reports(len(stale))
            for o in stale:
                log.info("ignored a report on task %s: %s", o.task_id, o.reason)
        # A finished task may be what the next task of its order key waits for.
        keys = {s.order_key for s in states.values() if s.dirty and s.order_key and s.status in TERMINAL}
        for key in sorted(keys):
            transaction.on_commit(partial(_release_next, key))
    return outcomes


def verdict_for(u: StatusUpdate, *, status: str, status_data: Any, node: str, run_id: str) -> tuple[Verdict, str]:
    """The verdict on an update of a task in this state, and why it is refused or ignored ("" if it is
    not): who may ask for what, then the status rules. No database: the asynchronous /task_update asks
    this before it queues an update, so a client hears at once what the writer would decide."""
    refused = _screen(u, node=node, run_id=run_id)
    if refused is not None:
        return refused
    verdict = judge(status, u.status, retry=u.retry)
    if verdict is Verdict.REJECT:
        return verdict, f"cannot change task_status from {status!r} to {u.status!r}"
    if verdict is Verdict.SAME and status in TERMINAL and u.status_data is not None and u.status_data != status_data:
        # A repeated final status changes nothing; one that would replace the result is refused, not dropped.
        return Verdict.REJECT, f"task {u.task_id!r} is already {status}: its result (task_status_data) is settled"
    return verdict, ""


def _apply(u: StatusUpdate, state: _State | None, at: datetime) -> Outcome:
    if state is None:
        return Outcome(u.task_id, None)
    before = state.status
    verdict, reason = verdict_for(u, status=before, status_data=state.status_data, node=state.node, run_id=state.run_id)
    if verdict in (Verdict.REJECT, Verdict.STALE):
        return Outcome(u.task_id, verdict, before, before, reason)
    if verdict is Verdict.APPLY:
        target, data = u.status, u.status_data
        if target == Status.COMPLETED and u.origin is Origin.NODE:
            target, data = _complete(u.task_id, state, data)
        if before == Status.CANCELLING:
            data = _cancel_outcome(state.status_data, data, target, by_node=u.origin is Origin.NODE)
        run_id = u.run_id if u.retry else state.run_id
        state.status = target
        state.dirty = True
        state.history.append(
            TaskStatusChange(
                task_id=u.task_id, from_status=before, to_status=target, at=at, source=u.source[:128], run_id=run_id
            )
        )
        if data is not None:
            state.status_data = data
    elif verdict is Verdict.SAME and u.status_data is not None and before not in TERMINAL:
        # A repeated non-final status may carry fresh data (progress, say); a final status is
        # settled and a duplicate of it changes nothing.
        state.status_data = u.status_data
        state.dirty = True
    return Outcome(u.task_id, verdict, before, state.status)


def _screen(u: StatusUpdate, *, node: str, run_id: str) -> tuple[Verdict, str] | None:
    """Who may ask for what, before the status rules: None to go on, else the verdict and why."""
    if u.origin is Origin.NODE:
        if not run_id or u.run_id != run_id:
            current = run_id or "none: a tracked task has no runs"
            return Verdict.STALE, f"{u.status!r} from run {u.run_id or '(no run)'}, not the current run ({current})"
        return None
    if u.status == Status.CANCELLING and u.origin is not Origin.SERVER:
        return Verdict.REJECT, "'cancelling' is set by a cancel (POST /api/v1/tasks/<id>/cancel/), not written"
    if node and u.origin is Origin.CLIENT and u.status != Status.FAILED and not u.retry:
        return Verdict.REJECT, (
            f"task {u.task_id!r} is executed by node {node!r}: its status comes from its node's reports. "
            "A client may cancel it (POST /api/v1/tasks/<id>/cancel/), or fail it before a node has it"
        )
    return None


def _cancel_outcome(stored: Any, data: dict[str, Any] | None, target: str, *, by_node: bool) -> dict[str, Any] | None:
    """A cancelling task ended: keep the cancel request in task_status_data, and say how it ended."""
    request = (stored or {}).get("cancel") if isinstance(stored, dict) else None
    if not isinstance(request, dict):
        return data
    if by_node:
        how = {
            Status.CANCELLED: "stopped on its node",
            Status.COMPLETED: "too late: the run had finished first",
            Status.FAILED: "too late: the run had failed first",
        }.get(Status(target), "")
    else:  # the dead-node sweep is the one writer but a node to end a cancelling task
        how = "its node went offline, so nothing runs there any more"
    return {**(data if data is not None else stored), "cancel": {**request, "outcome": how}}


def _release_next(order_key: str) -> None:
    from tasks_app.tasks.dispatch import publish_next

    publish_next(order_key)


def _complete(task_id: str, state: _State, data: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """Run the type's completion hook in a savepoint, on the node's result. If the record cannot be
    written (a volume name taken meanwhile, say), the task fails with that reason instead of
    claiming success."""
    hook = completion_hook(state.task_type)
    if hook is None:
        return Status.COMPLETED.value, data  # nothing to write: no savepoint (two round trips) either
    try:
        with transaction.atomic():
            hook(task_id, state.task_data or {}, data or {})
    except (OperationalError, InterfaceError):
        raise  # the database itself is in trouble: retry the whole batch, fail nothing
    except Exception as exc:
        log.exception("completion hook of %s %s failed", state.task_type, task_id)
        error = {"type": "CompletionHookError", "message": f"{type(exc).__name__}: {exc}"}
        return Status.FAILED.value, {**(data or {}), "error": error}
    return Status.COMPLETED.value, data


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


# --- creation ----------------------------------------------------------------------------------------


def _create(new: NewTask) -> Outcome:
    """Insert a task and its first history row, if its first status is allowed for its kind: an
    executed task starts pending (its node reports the rest); a tracked record may start in any
    status its caller gives, as the reference service allowed, except cancelling."""
    task = new.task
    if judge_initial(task.task_status, executed=bool(task.node)) is Verdict.REJECT:
        why = (
            f"an executed task starts 'pending' (its node reports the rest), not {task.task_status!r}"
            if task.node
            else "'cancelling' is set by a cancel, not written"
        )
        return Outcome(task.task_id, Verdict.REJECT, "", task.task_status, why)
    at = datetime.now(UTC)
    source = new.source[:128]
    if connection.vendor == "postgresql":
        inserted = _insert_with_history(task, at=at, source=source)  # one statement: atomic by itself
    else:
        try:
            with transaction.atomic():
                task.save(force_insert=True)
                TaskStatusChange.objects.create(
                    task=task, from_status="", to_status=task.task_status, at=at, source=source, run_id=task.run_id
                )
            inserted = True
        except IntegrityError:
            inserted = False
    if not inserted:
        return Outcome(task.task_id, Verdict.REJECT, "", task.task_status, EXISTS)
    return Outcome(task.task_id, Verdict.APPLY, "", task.task_status)


def _insert_with_history(task: GlobalTask, *, at: datetime, source: str) -> bool:
    """PostgreSQL: the task row and its first history row in one statement, so a create costs one
    round trip instead of four (the ORM's two INSERTs inside BEGIN/COMMIT). False if the id exists."""
    fields = list(GlobalTask._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(task, add=True), connection) for f in fields]
    history = TaskStatusChange._meta.db_table
    sql = (
        f"WITH t AS (INSERT INTO {GlobalTask._meta.db_table} ({columns}) "  # noqa: S608 (our own names)
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT (task_id) DO NOTHING RETURNING task_id) "
        f"INSERT INTO {history} (task_id, from_status, to_status, at, source, run_id) "
        "SELECT task_id, '', %s, %s, %s, %s FROM t RETURNING task_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, task.task_status, at, source, task.run_id])
        return cursor.fetchone() is not None
