"""Writes to the tasks table. Every view, admin action and command calls these.

Status changes never happen here directly: they go through tasks_app.transitions.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, connection, transaction

from tasks_app import dispatch, metrics, update_stream
from tasks_app.errors import TaskConflict, TaskNotFound
from tasks_app.models import GlobalTask, TaskStatusChange, new_task_id, now_ts
from tasks_app.selectors import task_exists
from tasks_app.status import Status, Verdict
from tasks_app.transitions import StatusUpdate, task_transition


def create_fingerprint(
    *, task_type: str, task_data: dict[str, Any], task_status: str, task_status_data: dict[str, Any]
) -> str:
    canonical = json.dumps([task_type, task_data, task_status, task_status_data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def task_create(
    *,
    task_id: str | None = None,
    task_type: str = "",
    task_data: dict[str, Any] | None = None,
    task_status: str = Status.PENDING.value,
    task_status_data: dict[str, Any] | None = None,
    node: str | None = None,
    source: str = "",
) -> tuple[GlobalTask, bool]:
    """Insert a task. Returns (task, created).

    A client may choose its own task_id so that retrying a create is safe: the same id with the
    same body returns the existing task (created=False); with a different body, TaskConflict.

    An executable task type is validated, assigned a node (`node`, else its first participant)
    and published to that node's queue once the transaction commits.
    """
    task_data = {} if task_data is None else task_data
    task_status_data = {} if task_status_data is None else task_status_data
    fingerprint = create_fingerprint(
        task_type=task_type, task_data=task_data, task_status=task_status, task_status_data=task_status_data
    )
    if task_id is not None:
        existing = GlobalTask.objects.filter(pk=task_id).only("create_fingerprint").first()
        if existing is not None:
            return _replayed(existing, fingerprint), False
    prepared = dispatch.prepare(task_type=task_type, task_data=task_data, node=node)
    task_data, assigned = prepared.task_data, prepared.node
    ts = now_ts()
    task = GlobalTask(
        task_id=task_id or new_task_id(),
        task_type=task_type,
        task_data=task_data,
        task_status=task_status,
        task_status_data=task_status_data,
        task_create_timestamp=ts,
        task_update_timestamp=ts,
        create_fingerprint=fingerprint,
        node=assigned,
        order_key=prepared.order_key,
    )
    at = datetime.now(UTC)
    if connection.vendor == "postgresql":
        inserted = _insert_with_history(task, at=at, source=source[:128])  # one statement: atomic by itself
    else:
        try:
            with transaction.atomic():
                task.save(force_insert=True)
                # The creation is the first entry of the task's history.
                TaskStatusChange.objects.create(
                    task=task, from_status="", to_status=task_status, at=at, source=source[:128]
                )
            inserted = True
        except IntegrityError:
            inserted = False
    if not inserted:
        # Two creates with the same client-chosen id raced; the loser answers like a retry.
        existing = GlobalTask.objects.filter(pk=task.task_id).first()
        if existing is None:
            raise TaskConflict(f"Task {task.task_id!r} could not be created; try again")
        return _replayed(existing, fingerprint), False
    if assigned and task_status == Status.PENDING:
        # After commit, never before: a worker must not get an id the database doesn't have yet
        # (outside a transaction this runs at once: the insert has committed). If this process
        # dies first, the sweep publishes it (tasks_app.dispatch.sweep).
        transaction.on_commit(partial(dispatch.publish, task.task_id))
    metrics.count_created(task_type)  # counted on commit; never raises
    return task, True


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
        f"INSERT INTO {history} (task_id, from_status, to_status, at, source) "
        "SELECT task_id, '', %s, %s, %s FROM t RETURNING task_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, task.task_status, at, source])
        return cursor.fetchone() is not None


def _replayed(existing: GlobalTask, fingerprint: str) -> GlobalTask:
    if existing.create_fingerprint != fingerprint:
        raise TaskConflict(f"Task {existing.task_id!r} already exists with a different body")
    return existing


_EDITABLE = ("task_data", "task_type", "task_status_data")


def task_update(*, task_id: str, changes: dict[str, Any], source: str = "") -> GlobalTask:
    """Change a task's fields. A status change goes through the transition rules (TaskConflict if refused)."""
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).only("node", "attempts").first()
        if task is None:
            raise TaskNotFound(task_id)
        if task.node and ({"task_data", "task_type"} & set(changes)):
            # Its payload was validated when it was created and is what its node will run.
            raise TaskConflict("task_data and task_type of a task that runs on a node cannot be changed")
        if "task_status" in changes:
            status = changes["task_status"]
            outcome = task_transition(
                update=StatusUpdate(
                    task_id=task_id, status=status, status_data=changes.get("task_status_data"), source=source
                )
            )
            if outcome.verdict is Verdict.REJECT:
                raise TaskConflict(f"Cannot change task_status from {outcome.from_status!r} to {status!r}")
            if outcome.verdict is Verdict.APPLY and task.node and status == "cancelled":
                transaction.on_commit(partial(dispatch.revoke, task_id))
            elif outcome.verdict is Verdict.APPLY and task.node and status == "failed":
                transaction.on_commit(partial(dispatch.void_attempt, task_id, task.attempts))
        fields = {name: changes[name] for name in _EDITABLE if name in changes}
        if fields:
            GlobalTask.objects.filter(pk=task_id).update(**fields, task_update_timestamp=now_ts())
        return GlobalTask.objects.get(pk=task_id)


def task_delete(*, task_id: str) -> None:
    deleted, _ = GlobalTask.objects.filter(pk=task_id).delete()
    if not deleted:
        raise TaskNotFound(task_id)


def task_update_push(
    *, task_id: str, status: str, task_status_data: dict[str, Any] | None = None, source: str = ""
) -> str:
    """Queue a status update for the writers (the seed's asynchronous path). Returns the stream id.

    Unknown tasks are refused here, at once, rather than dropped later by a writer.
    """
    if not task_exists(task_id=task_id):
        raise TaskNotFound(task_id)
    return update_stream.push(StatusUpdate(task_id=task_id, status=status, status_data=task_status_data, source=source))


def task_retry(
    *, task_id: str, source: str = "", node: str | None = None, note: dict[str, Any] | None = None
) -> GlobalTask:
    """Re-trigger a failed task: same task_id, a new attempt, history kept; published after commit.

    `node` moves the new attempt to another node (the dead-node sweep); `note` replaces the default
    task_status_data, which keeps the failed attempt's data under "previous_attempt"."""
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            raise TaskNotFound(task_id)
        outcome = task_transition(update=StatusUpdate(task_id=task_id, status="pending", retry=True, source=source))
        if outcome.verdict is not Verdict.APPLY:
            raise TaskConflict(f"Only a failed task can be retried; task {task_id!r} is {outcome.from_status}")
        previous = task.task_status_data or {}
        GlobalTask.objects.filter(pk=task_id).update(
            node=node or task.node,
            attempts=task.attempts + 1,
            dispatched_at=None,
            task_status_data=note if note is not None else {"previous_attempt": {"attempt": task.attempts, **previous}},
            task_update_timestamp=now_ts(),
        )
        if task.node:
            # A message of the failed attempt may still sit in a queue (its node was down): void it.
            transaction.on_commit(partial(dispatch.void_attempt, task_id, task.attempts))
            transaction.on_commit(partial(dispatch.publish, task_id))
    return GlobalTask.objects.get(pk=task_id)


def task_cancel(*, task_id: str, source: str = "") -> GlobalTask:
    """Cancel a task that has not finished. A pending or received one never starts; a running one
    is told to stop on its node (cancellation marker and a Celery revoke) and ends cancelled now."""
    with transaction.atomic():
        if not GlobalTask.objects.filter(pk=task_id).exists():
            raise TaskNotFound(task_id)
        outcome = task_transition(update=StatusUpdate(task_id=task_id, status="cancelled", source=source))
        if outcome.verdict is not Verdict.APPLY:
            raise TaskConflict(
                f"Task {task_id!r} is already {outcome.from_status}; only unfinished tasks can be cancelled"
            )
        transaction.on_commit(partial(dispatch.revoke, task_id))
    return GlobalTask.objects.get(pk=task_id)
