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
- taskhub itself (Origin.SERVER): cancel, retry, a drain's moves, the dead-node sweep, the pull API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import JSONField, OuterRef, Subquery

from tasks_app.families.registry import completion_hook
from tasks_app.ops import latency, metrics
from tasks_app.tasks.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.tasks.selectors import create_fingerprints
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
    "task_transition_new_many",
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
    # The time of its latest history row (epoch seconds; when asked for, else its task_update_timestamp):
    # a change after it is never dated before it, whatever a reporter's clock says.
    floor: float
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
        rows = GlobalTask.objects.select_for_update().filter(task_id__in=ids).order_by("task_id")
        fields = ["task_status", "task_status_data", "task_type", "task_data", "order_key", "node", "run_id"]
        if any(u.at is not None for u in updates):
            # Reports that say when they happened: dated no earlier than the task's latest history row (an
            # index-only read of task_history_task_at per task).
            latest = TaskStatusChange.objects.filter(task_id=OuterRef("pk")).order_by("-at", "-id").values("at")[:1]
            rows = rows.annotate(latest_at=Subquery(latest))
            fields.append("latest_at")
        else:
            fields.append("task_update_timestamp")
        values = rows.values_list("task_id", *fields)
        states = {
            tid: _State(status, data, ttype, tdata, key, node, run, floor=_epoch(latest))
            for tid, status, data, ttype, tdata, key, node, run, latest in values
        }
        at = datetime.now(UTC)
        outcomes = [_apply(u, states.get(u.task_id), at) for u in updates]
        _write(states)
        applied = [(states[o.task_id].task_type, o.to_status) for o in outcomes if o.verdict is Verdict.APPLY]
        metrics.count_finished(applied)  # the final ones, on commit (taskhub_tasks_finished_total)
        _observe_finished_runs(states)
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
    verdict = judge(status, u.status, retry=u.retry, move=u.move)
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
        run_id = u.run_id if u.retry or u.move else state.run_id
        state.status = target
        state.dirty = True
        state.history.append(
            TaskStatusChange(
                task_id=u.task_id, from_status=before, to_status=target, at=_when(u, state, at),
                source=u.source[:128], run_id=run_id, progress=_progress_of(u.status_data),
            )
        )  # fmt: skip
        if data is not None:
            state.status_data = data
    elif verdict is Verdict.SAME and u.status_data is not None and before not in TERMINAL:
        # A repeated non-final status may carry fresh data (progress, say); a final status is
        # settled and a duplicate of it changes nothing. Fresh data is a progress row in the history
        # (from == to), so the event stream can replay it; the same data again is no event.
        if u.status_data != state.status_data:
            state.history.append(
                TaskStatusChange(
                    task_id=u.task_id, from_status=before, to_status=before, at=_when(u, state, at),
                    source=u.source[:128], run_id=state.run_id, progress=_progress_of(u.status_data),
                )
            )  # fmt: skip
        state.status_data = u.status_data
        state.dirty = True
    return Outcome(u.task_id, verdict, before, state.status)


def _progress_of(data: Any) -> dict[str, Any] | None:
    """The "progress" object of a report's data (workers/protocol/context.py writes it), if it has one."""
    progress = data.get("progress") if isinstance(data, dict) else None
    return progress if isinstance(progress, dict) else None


def _epoch(value: datetime | int | None) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0)


def _when(u: StatusUpdate, state: _State, applied: datetime) -> datetime:
    """A change's time in the history: when it happened where it was reported (a node's report says),
    else when it is applied. A reporter's clock is trusted only between the task's latest change and now,
    so a skewed node cannot date a change before the one it follows, or in the future."""
    if u.at is None:
        return applied
    at = min(datetime.fromtimestamp(max(u.at, state.floor), UTC), applied)
    state.floor = at.timestamp()
    return at


def _screen(u: StatusUpdate, *, node: str, run_id: str) -> tuple[Verdict, str] | None:
    """Who may ask for what, before the status rules: None to go on, else the verdict and why."""
    if u.origin is Origin.NODE:
        if not run_id or u.run_id != run_id:
            current = run_id or "none: a tracked task has no runs"
            return Verdict.STALE, f"{u.status!r} from run {u.run_id or '(no run)'}, not the current run ({current})"
        return None
    if u.move and u.origin is not Origin.SERVER:
        return Verdict.REJECT, "a task is moved to another node by taskhub (a drain), not by a client"
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


def _observe_finished_runs(states: dict[str, _State]) -> None:
    """Time the runs this batch finished for /metrics' latency histograms, observed on commit: one query
    for all of them, after _write so the batch's own rows are read too. latency.py's definitions, so the
    histograms and /api/v1/stats/ measure alike. Tracked tasks have no runs (run_id "")."""
    finished = {
        (h.task_id, h.run_id): (s.task_type, s.node)
        for s in states.values()
        if s.dirty
        for h in s.history
        if h.to_status in TERMINAL and h.run_id
    }
    if not finished:
        return
    samples: list[tuple[str, str, str, float]] = []
    try:
        for key, run in latency.run_timings(list(finished), chunk=len(finished)):
            if run.outcome not in TERMINAL:
                continue
            task_type, node = finished[key]
            for measure, value in latency.measures(run).items():
                if value is not None:  # a step the run skipped (a cancel before it ran has no run time)
                    samples.append((measure, task_type, node, value.total_seconds()))
    except DatabaseError:
        raise  # the transaction is broken anyway: the batch is retried whole
    except Exception:  # a metric is never worth a failed batch
        log.exception("run latencies not observed")
        return
    metrics.observe_run_latencies(samples)


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
        # One statement for the whole batch, rows and history, parsed and planned once instead of once per
        # row, and one round trip instead of two.
        update = (
            f"UPDATE {table} AS t SET task_status = v.status, task_status_data = v.data, "  # noqa: S608
            "task_update_timestamp = %s "
            "FROM unnest(%s::text[], %s::text[], %s::jsonb[]) AS v(task_id, status, data) WHERE t.task_id = v.task_id"
        )
        params: list[Any] = [
            ts,
            [tid for tid, _ in dirty],
            [s.status for _, s in dirty],
            [json.dumps(s.status_data, cls=json_field.encoder) for _, s in dirty],
        ]
        history = [h for _, s in dirty for h in s.history]
        sql = update
        if history:
            sql = f"WITH u AS ({update}) {_HISTORY_INSERT}"
            params += [
                [h.task_id for h in history], [h.from_status for h in history], [h.to_status for h in history],
                [h.at for h in history], [h.source for h in history], [h.run_id for h in history],
                [None if h.progress is None else json.dumps(h.progress) for h in history],
            ]  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    sql = f"UPDATE {table} SET task_status = %s, task_status_data = %s, task_update_timestamp = %s "  # noqa: S608
    sql += "WHERE task_id = %s"
    params = [(s.status, json_field.get_db_prep_value(s.status_data, connection), ts, tid) for tid, s in dirty]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)  # one round trip per batch on SQLite
    _write_history(dirty)


_HISTORY_INSERT = (
    f"INSERT INTO {TaskStatusChange._meta.db_table} (task_id, from_status, to_status, at, source, run_id, progress) "  # noqa: S608
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::jsonb[])"
)


def _write_history(dirty: list[tuple[str, _State]]) -> None:
    history = [h for _, s in dirty for h in s.history]
    if history:
        TaskStatusChange.objects.bulk_create(history)


# --- creation ----------------------------------------------------------------------------------------


def task_transition_new_many(*, news: Sequence[NewTask]) -> list[Outcome]:
    """Creations, in the caller's transaction (or one of their own): each row and its first history row,
    if its first status is allowed for its kind. One Outcome each, in order: APPLY if inserted; REJECT
    with the reason if its first status is not allowed, or with EXISTS if its task_id is taken (by a
    row in the table, or by an earlier one of these). A single create is a batch of one."""
    outcomes: list[Outcome | None] = [None] * len(news)
    todo: list[tuple[int, NewTask]] = []
    seen: set[str] = set()
    for i, new in enumerate(news):
        task = new.task
        why = _initial_refusal(task)
        if why:
            outcomes[i] = Outcome(task.task_id, Verdict.REJECT, "", task.task_status, why)
        elif task.task_id in seen:
            outcomes[i] = Outcome(task.task_id, Verdict.REJECT, "", task.task_status, EXISTS)
        else:
            seen.add(task.task_id)
            todo.append((i, new))
    inserted = _insert_with_history([new for _, new in todo], at=datetime.now(UTC)) if todo else set()
    for i, new in todo:
        task = new.task
        ok = task.task_id in inserted
        outcomes[i] = Outcome(
            task.task_id, Verdict.APPLY if ok else Verdict.REJECT, "", task.task_status, "" if ok else EXISTS
        )
    return [o for o in outcomes if o is not None]


def _create(new: NewTask) -> Outcome:
    return task_transition_new_many(news=[new])[0]


def _initial_refusal(task: GlobalTask) -> str:
    """Why a task may not start in its status ("" if it may): an executed task starts pending (its node
    reports the rest); a tracked record may start in any status its caller gives, as the reference
    service allowed, except cancelling."""
    if judge_initial(task.task_status, executed=bool(task.node)) is not Verdict.REJECT:
        return ""
    if task.node and task.task_status == Status.FAILED and task.placement.get("outcome") == "unschedulable":
        return ""  # no node may take it (tasks_app/fleet/placement.py): it fails at once, saying why
    if task.node:
        return f"an executed task starts 'pending' (its node reports the rest), not {task.task_status!r}"
    return "'cancelling' is set by a cancel, not written"


def _insert_with_history(news: list[NewTask], *, at: datetime) -> set[str]:
    """Insert the rows and their first history rows; the task_ids inserted (a taken one is skipped).
    The ids must be distinct."""
    if connection.vendor == "postgresql":
        return _insert_with_history_pg(news, at=at)  # one statement: atomic by itself
    remaining = news
    while remaining:
        try:
            with transaction.atomic():
                GlobalTask.objects.bulk_create([n.task for n in remaining])
                TaskStatusChange.objects.bulk_create(
                    TaskStatusChange(
                        task_id=n.task.task_id,
                        from_status="",
                        to_status=n.task.task_status,
                        at=at,
                        source=n.source[:128],
                        run_id=n.task.run_id,
                    )
                    for n in remaining
                )
            break
        except IntegrityError:
            # An id was taken since the caller looked (a concurrent create): skip the taken ones, insert
            # the rest. Anything else that broke the insert is not ours to hide.
            taken = set(create_fingerprints([n.task.task_id for n in remaining]))
            if not taken:
                raise
            remaining = [n for n in remaining if n.task.task_id not in taken]
    return {n.task.task_id for n in remaining}


def _insert_with_history_pg(news: list[NewTask], *, at: datetime) -> set[str]:
    """PostgreSQL: the task rows and their first history rows in one statement, so a create costs one
    round trip instead of four (the ORM's two INSERTs inside BEGIN/COMMIT). One row takes VALUES (the
    single create's hot path: cheaper to bind); many take each column as one array parameter (unnest), one
    statement parsed and planned once for a thousand rows, instead of a VALUES list of 14,000 parameters."""
    fields = list(GlobalTask._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    history = TaskStatusChange._meta.db_table
    # Every name in these statements is our own constant; every value is a parameter.
    head = f"WITH t AS (INSERT INTO {GlobalTask._meta.db_table} ({columns}) "
    if len(news) == 1:
        task, source = news[0].task, news[0].source[:128]
        values = [f.get_db_prep_save(f.pre_save(task, add=True), connection) for f in fields]
        placeholders = ", ".join(["%s"] * len(fields))
        sql = (
            f"{head}VALUES ({placeholders}) ON CONFLICT (task_id) DO NOTHING RETURNING task_id) "  # noqa: S608
            f"INSERT INTO {history} (task_id, from_status, to_status, at, source, run_id) "
            "SELECT task_id, '', %s, %s, %s, %s FROM t RETURNING task_id"
        )
        params = [*values, task.task_status, at, source, task.run_id]
    else:
        arrays: list[list[Any]] = []
        for f in fields:
            values = [getattr(n.task, f.attname) for n in news]  # text and integers as the model holds them
            arrays.append([json.dumps(v, cls=f.encoder) for v in values] if isinstance(f, JSONField) else values)
        casts = ", ".join(f"%b::{f.db_type(connection)}[]" for f in fields)
        sql = (
            f"{head}SELECT * FROM unnest({casts}) ON CONFLICT (task_id) DO NOTHING "  # noqa: S608
            "RETURNING task_id, task_status, run_id) "
            f"INSERT INTO {history} (task_id, from_status, to_status, at, source, run_id) "
            "SELECT t.task_id, '', t.task_status, %s, s.source, t.run_id "
            "FROM t JOIN unnest(%s::text[], %s::text[]) AS s(task_id, source) USING (task_id) RETURNING task_id"
        )
        params = [*arrays, at, [n.task.task_id for n in news], [n.source[:128] for n in news]]
        return {str(row[0]) for row in _server_bound(sql, params)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {str(row[0]) for row in cursor.fetchall()}


def _server_bound(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run one statement with its parameters sent apart from it (server-side binding), in the current
    transaction. Django's PostgreSQL cursors quote every value into the statement's text (client-side
    binding), which for a thousand rows' arrays costs more than the insert itself."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
