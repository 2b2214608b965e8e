"""Writes to the tasks table. Every view, admin action and command calls these.

Status changes never happen here directly: they go through tasks_app/tasks/transitions.py.

Two kinds of task share the table. A tracked task is a record its caller drives (the reference Global
tasks DB's whole job): stored exactly as sent, never handed to a node, moved by its caller's
updates. An executed task is work taskhub runs on a node, asked for explicitly: its payload is
validated against its type's spec, it gets a node and a run id, and its status comes from its node.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from functools import partial
from typing import Any

from django.db import transaction

from tasks_app.errors import InvalidInput, TaskConflict, TaskNotFound
from tasks_app.fleet.models import Node
from tasks_app.fleet.placement import Placement, choose, reserved_by, unfit
from tasks_app.ops import metrics
from tasks_app.tasks import dispatch, stream
from tasks_app.tasks.models import GlobalTask, new_run_id, new_task_id, now_ts
from tasks_app.tasks.transitions import EXISTS, NewTask, task_transition, verdict_for
from workers.protocol import specs
from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.run_end import End
from workers.protocol.status import TERMINAL, Status, Verdict


def create_fingerprint(
    *,
    task_type: str,
    task_data: dict[str, Any],
    task_status: str,
    task_status_data: dict[str, Any],
    execute: bool = False,
    node: str | None = None,
    constraints: dict[str, Any] | None = None,
) -> str:
    parts: list[Any] = [task_type, task_data, task_status, task_status_data]
    if execute:
        parts += ["execute", node or ""]
    if constraints:  # only when given: the fingerprints of creates without any stay what they were
        parts += ["constraints", constraints]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def task_create(
    *,
    task_id: str | None = None,
    task_type: str = "",
    task_data: dict[str, Any] | None = None,
    task_status: str = Status.PENDING.value,
    task_status_data: dict[str, Any] | None = None,
    execute: bool = False,
    node: str | None = None,
    constraints: dict[str, Any] | None = None,
    source: str = "",
) -> tuple[GlobalTask, bool]:
    """Insert a task. Returns (task, created).

    A client may choose its own task_id so that retrying a create is safe: the same id with the
    same body returns the existing task (created=False); with a different body, TaskConflict.

    Without `execute`, the task is tracked: stored exactly as sent, any type, any JSON data. With it,
    the type must be executable: the payload is validated and checked, the task gets a node (`node`,
    else its type's rule) and a run, starts pending, and is published to that node's queue once the
    transaction commits. `constraints` (labels, capacity) limit the nodes it may run on; a task no node
    may take is stored failed at once (tasks_app/fleet/placement.py).
    """
    task_data = {} if task_data is None else task_data
    task_status_data = {} if task_status_data is None else task_status_data
    fingerprint = create_fingerprint(
        task_type=task_type,
        task_data=task_data,
        task_status=task_status,
        task_status_data=task_status_data,
        execute=execute,
        node=node,
        constraints=constraints,
    )
    if task_id is not None:
        existing = GlobalTask.objects.filter(pk=task_id).only("create_fingerprint").first()
        if existing is not None:
            return _replayed(existing, fingerprint), False
    task_id = task_id or new_task_id()
    # Capacity read by placement stays free until the insert commits (placement.Placement.lock): one
    # transaction around both. Without a need for capacity, the insert is a transaction of its own.
    reserving = isinstance(constraints, dict) and bool(constraints.get("capacity")) and execute
    with transaction.atomic() if reserving else nullcontext():
        task = new_task_row(
            task_id=task_id,
            task_type=task_type,
            task_data=task_data,
            task_status=task_status,
            task_status_data=task_status_data,
            execute=execute,
            node=node,
            constraints=constraints,
            fingerprint=fingerprint,
        )
        outcome = task_transition(update=NewTask(task, source))
    if outcome.reason == EXISTS:
        # Two creates with the same client-chosen id raced; the loser answers like a retry.
        existing = GlobalTask.objects.filter(pk=task_id).first()
        if existing is None:
            raise TaskConflict(f"Task {task_id!r} could not be created; try again")
        return _replayed(existing, fingerprint), False
    if outcome.verdict is not Verdict.APPLY:
        raise InvalidInput(f"task_status: {outcome.reason}")
    if execute and task.task_status == Status.PENDING:
        # After commit, never before: a worker must not get an id the database doesn't have yet
        # (outside a transaction this runs at once: the insert has committed). If this process
        # dies first, the sweep publishes it (tasks_app/tasks/dispatch.py: sweep).
        if task.dispatched_at is not None:  # new_task_row: Prepared.publish_on_commit
            transaction.on_commit(partial(dispatch.publish_created, task))
        else:
            transaction.on_commit(partial(dispatch.publish, task.task_id))
    metrics.count_created(task_type)  # counted on commit; never raises
    return task, True


def new_task_row(
    *,
    task_id: str,
    task_type: str,
    task_data: dict[str, Any],
    task_status: str,
    task_status_data: dict[str, Any],
    execute: bool,
    node: str | None,
    fingerprint: str,
    constraints: dict[str, Any] | None = None,
    placement: Placement | None = None,
) -> GlobalTask:
    """The row a create inserts (not saved yet; task_create and the bulk create share it). An executed
    task's payload is validated and checked, and it gets its node and its first run; InvalidInput,
    naming the field, if it cannot. `placement`: shared by the tasks of one request (dispatch.prepare)."""
    if execute and task_status != Status.PENDING:
        # Before placing it (which reserves capacity for the rest of a bulk request): it would be refused.
        raise InvalidInput(
            f"task_status: an executed task starts 'pending' (its node reports the rest), not {task_status!r}"
        )
    if execute:
        prepared = dispatch.prepare(
            task_type=task_type,
            task_data=task_data,
            node=node,
            task_id=task_id,
            constraints=constraints,
            placement=placement,
        )
    elif node:
        raise InvalidInput('node: only an executed task runs on a node; ask for execution with "execute": true')
    elif constraints:
        raise InvalidInput(
            'constraints: only an executed task is placed on a node; ask for execution with "execute": true'
        )
    else:
        prepared = dispatch.Prepared(task_data)
    if prepared.unschedulable:
        # No node may take it: it fails now, saying why, rather than wait for a node that never comes.
        task_status = Status.FAILED.value
        task_status_data = {"error": {"type": "Unschedulable", "message": prepared.unschedulable}}
    ts = now_ts()
    return GlobalTask(
        task_id=task_id,
        task_type=task_type,
        task_data=prepared.task_data,
        task_status=task_status,
        task_status_data=task_status_data,
        task_create_timestamp=ts,
        task_update_timestamp=ts,
        create_fingerprint=fingerprint,
        node=prepared.node,
        run_id=new_run_id() if execute else "",
        order_key=prepared.order_key,
        # Published straight after the commit: recorded by the insert, not by an UPDATE after.
        dispatched_at=ts if prepared.publish_on_commit else None,
        constraints=prepared.constraints,
        placement=prepared.placement,
    )


def _replayed(existing: GlobalTask, fingerprint: str) -> GlobalTask:
    if existing.create_fingerprint != fingerprint:
        raise TaskConflict(f"Task {existing.task_id!r} already exists with a different body")
    return existing


_EDITABLE = ("task_data", "task_type", "task_status_data")


def task_update(*, task_id: str, changes: dict[str, Any], source: str = "") -> GlobalTask:
    """Change a task's fields (PUT, the admin). A status change goes through the transition rules
    (TaskConflict with the reason if refused).

    A tracked task's caller may change anything, its type included: it stays a record, so no node
    runs it and no completion hook fires, whatever it is called. An executed task runs what was
    validated when it was created, and its status comes from its node: its type and data cannot
    change, and a client may only fail it or cancel it."""
    with transaction.atomic():
        task = (
            GlobalTask.objects.select_for_update()
            .filter(pk=task_id)
            .only("node", "run_id", "task_status", "dispatched_at")
            .first()
        )
        if task is None:
            raise TaskNotFound(task_id)
        status = changes.get("task_status")
        if status is None and "task_status_data" in changes and task.task_status in TERMINAL:
            # A finished task's result is settled: judged as a repeat of its final status, which may
            # carry the same data (a client's retry) but not replace it.
            status = task.task_status
        if task.node:
            if {"task_data", "task_type"} & set(changes):
                raise TaskConflict(
                    f"task_data and task_type of an executed task cannot be changed: node {task.node!r} runs "
                    "what was validated when it was created"
                )
            if "task_status_data" in changes and status != Status.FAILED:
                raise TaskConflict("task_status_data of an executed task comes from its node's reports")
            if status == Status.CANCELLED:
                return task_cancel(task_id=task_id, source=source)
            if status == Status.FAILED and task.task_status not in TERMINAL and not _cannot_have_started(task):
                # Failing it here would release the next task of its ordering key while the node works on.
                raise TaskConflict(
                    f"Task {task_id!r} may be running on node {task.node!r}: cancel it (POST /api/v1/tasks/"
                    f"{task_id}/cancel/), and its node stops it, undoes what it did, and says how it ended"
                )
        if status is not None:
            outcome = task_transition(
                update=StatusUpdate(
                    task_id=task_id, status=status, status_data=changes.get("task_status_data"), source=source
                )
            )
            if outcome.verdict in (Verdict.REJECT, Verdict.STALE):
                raise TaskConflict(outcome.reason[:1].upper() + outcome.reason[1:])
            if outcome.verdict is Verdict.APPLY and task.node and status == Status.FAILED:
                # Failed by hand: its run must stop, and report nothing more.
                transaction.on_commit(partial(dispatch.end_run, task.run_id, End.VOID))
        fields = {name: changes[name] for name in _EDITABLE if name in changes}
        if fields:
            GlobalTask.objects.filter(pk=task_id).update(**fields, task_update_timestamp=now_ts())
        return GlobalTask.objects.get(pk=task_id)


def task_delete(*, task_id: str) -> None:
    """Delete a task and its history. An executed task's unfinished run is told to stop, without waiting
    for it and without undoing what it did (cancel does both): nothing it does later can land on a task
    created again under the same id (its run id differs anyway). The next task of its ordering key is
    released."""
    with transaction.atomic():
        row = (
            GlobalTask.objects.select_for_update()
            .filter(pk=task_id)
            .values("run_id", "task_status", "order_key")
            .first()
        )
        if row is None:
            raise TaskNotFound(task_id)
        GlobalTask.objects.filter(pk=task_id).delete()
        if row["run_id"] and row["task_status"] not in TERMINAL:
            transaction.on_commit(partial(dispatch.end_run, row["run_id"], End.VOID))
        if row["order_key"]:
            transaction.on_commit(partial(dispatch.publish_next, row["order_key"]))


def task_update_push(
    *,
    task_id: str,
    status: str,
    task_status_data: dict[str, Any] | None = None,
    source: str = "",
    reporter: Node | None = None,
    run_id: str = "",
) -> str:
    """Queue a status update for the writers (the seed's asynchronous path). Returns the stream id, or
    "" for a node's report on a run that is no longer the task's current one (ignored, not queued).

    Refused here, at once, rather than dropped later by a writer: an unknown task (404), an update of
    an executed task from anyone but its node (409), or from its node without the run it is about
    (400), and an update the status rules refuse (409, with the reason). `reporter` is the node account
    that sends it (a pull agent); its update is a report on `run_id`.
    """
    row = GlobalTask.objects.filter(pk=task_id).values("node", "run_id", "task_status", "task_status_data").first()
    if row is None:
        raise TaskNotFound(task_id)
    if row["node"]:
        if reporter is None or reporter.name != row["node"]:
            raise TaskConflict(
                f"Task {task_id!r} is executed by node {row['node']!r}: its status comes from its node's reports. "
                f"Cancel it with POST /api/v1/tasks/{task_id}/cancel/"
            )
        if not run_id:
            # Without it, a report about a run the agent fetched before a retry would land on the new run.
            raise InvalidInput(f"'run_id' is required: the run id the pull API gave with task {task_id!r}")
        update = StatusUpdate(
            task_id=task_id,
            status=status,
            status_data=task_status_data,
            source=source,
            run_id=run_id,
            origin=Origin.NODE,
        )
    else:
        if run_id:
            raise TaskConflict(f"'run_id': task {task_id!r} is a tracked task; it has no runs")
        update = StatusUpdate(task_id=task_id, status=status, status_data=task_status_data, source=source)
    # Judged now, as the writer will judge it, so that an update the status rules refuse is a 409 with
    # the reason rather than a 200 the writer drops. (A change that lands in between is judged again
    # by the writer, which counts what it refuses in taskhub_updates_refused_total.)
    verdict, reason = verdict_for(
        update, status=row["task_status"], status_data=row["task_status_data"], node=row["node"], run_id=row["run_id"]
    )
    if verdict is Verdict.REJECT:
        raise TaskConflict(reason[:1].upper() + reason[1:])
    if verdict is Verdict.STALE:
        # A late report on an old run (a pull agent's, after a retry): ignored, as the writer would, and
        # not an error for the agent, whose report was true when it made it.
        metrics.count_ignored_reports(1)
        return ""
    return stream.push(update)


def task_retry(
    *,
    task_id: str,
    source: str = "",
    node: str | None = None,
    note: dict[str, Any] | None = None,
    placement: dict[str, Any] | None = None,
) -> GlobalTask:
    """Re-trigger a failed or cancelled executed task: same task_id, a new run, history kept;
    published after commit. It runs on its node again, unless that node may no longer take it
    (cordoned, its labels changed, no capacity left): then it is placed again as a create would be, and
    a retry that no node may take is a TaskConflict saying why.

    `node` moves the new run to another node (the dead-node sweep), `placement` saying why; `note` replaces
    the default task_status_data, which keeps the ended run's data under "previous_attempt"."""
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            raise TaskNotFound(task_id)
        if not task.node:
            raise TaskConflict(f"Task {task_id!r} is a tracked task: its caller drives it, and it has no runs to retry")
        if task.task_status not in (Status.FAILED, Status.CANCELLED):
            raise TaskConflict(
                f"Only a failed or cancelled task can be retried; task {task_id!r} is {task.task_status}"
            )
        target, record = (node, placement or task.placement) if node else _placed_again(task)
        run = new_run_id()
        outcome = task_transition(
            update=StatusUpdate(
                task_id=task_id, status="pending", retry=True, source=source, run_id=run, origin=Origin.SERVER
            )
        )
        if outcome.verdict is not Verdict.APPLY:
            raise TaskConflict(
                f"Only a failed or cancelled task can be retried; task {task_id!r} is {outcome.from_status}"
            )
        previous = task.task_status_data or {}
        GlobalTask.objects.filter(pk=task_id).update(
            node=target,
            run_id=run,
            attempts=task.attempts + 1,
            dispatched_at=None,
            placement=record,
            task_status_data=note if note is not None else {"previous_attempt": {"attempt": task.attempts, **previous}},
            task_update_timestamp=now_ts(),
        )
        # A message of the ended run may still sit in a queue (its node was down): it must not run.
        transaction.on_commit(partial(dispatch.end_run, task.run_id, End.VOID))
        transaction.on_commit(partial(dispatch.publish, task_id))
    return GlobalTask.objects.get(pk=task_id)


def _placed_again(task: GlobalTask) -> tuple[str, dict[str, Any]]:
    """Where a retried task runs: its node if that may still take it, else where a create would place it
    now (among its participants, or only the node its create named)."""
    placement = Placement()
    info = placement.nodes([task.node])[task.node]
    need = reserved_by(task.constraints)
    if need:
        placement.lock()
    reserved = placement.reserved([task.node])[task.node] if need else None
    if info is not None and not unfit(info, task.constraints or {}, reserved):
        return task.node, task.placement
    spec = specs.get(task.task_type)
    explicit = task.placement.get("rule") == "explicit" or spec is None
    candidates = [task.node] if explicit or spec is None else (spec.participants(task.task_data) or [task.node])
    known = [n for n, i in placement.nodes(candidates).items() if i is not None]
    choice = choose(
        task_type=task.task_type,
        candidates=known or [task.node],
        constraints=task.constraints or {},
        placement=placement,
        explicit=explicit,
        key=task.order_key,
    )
    if choice.unschedulable:
        raise TaskConflict(f"Task {task.task_id!r} cannot be retried now: {choice.unschedulable}")
    return choice.node, choice.record


def task_move(*, task_id: str, node: str, source: str, record: dict[str, Any]) -> GlobalTask:
    """Move a pending executed task to another node (a drain): a new run there, a pending -> pending
    history row naming both nodes, published after commit; its old run is voided, so that a message of it
    still queued on the old node never runs. `record`: its new placement (why it runs there now).
    TaskConflict if it is no longer pending: a node may have it."""
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).only("node", "run_id", "placement").first()
        if task is None:
            raise TaskNotFound(task_id)
        run = new_run_id()
        outcome = task_transition(
            update=StatusUpdate(
                task_id=task_id, status="pending", move=True, source=source, run_id=run, origin=Origin.SERVER
            )
        )
        if outcome.verdict is not Verdict.APPLY:
            raise TaskConflict(f"Only a pending task can be moved; task {task_id!r} is {outcome.from_status}")
        moved = {"from": task.node, "to": node, "at": now_ts(), "by": source}
        GlobalTask.objects.filter(pk=task_id).update(
            node=node,
            run_id=run,
            dispatched_at=None,
            placement={**record, "moves": [*task.placement.get("moves", []), moved][-10:]},
            task_update_timestamp=now_ts(),
        )
        transaction.on_commit(partial(dispatch.end_run, task.run_id, End.VOID))
        transaction.on_commit(partial(dispatch.publish, task_id))
    return GlobalTask.objects.get(pk=task_id)


def task_cancel(*, task_id: str, source: str = "") -> GlobalTask:
    """Cancel a task that has not finished.

    A tracked task, or an executed one that no node can have started yet (never published, or
    waiting for a pull agent to fetch it), is cancelled at once. One that a node may be running is
    `cancelling` until that node confirms: it stops at a safe point, undoes what it had done where
    its type can, and reports `cancelled`; or it finishes first, and the task ends as it finished,
    with task_status_data.cancel saying the cancel came too late. Either way its queued message is
    revoked and the run's cancel marker set, and the next task of its order key waits until it is
    final. Cancelling a task that is already cancelling changes nothing."""
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            raise TaskNotFound(task_id)
        if task.task_status == Status.CANCELLING:
            return task
        if task.task_status in TERMINAL:
            raise TaskConflict(
                f"Task {task_id!r} is already {task.task_status}; only unfinished tasks can be cancelled"
            )
        target, data = Status.CANCELLED.value, None
        if task.node and not _cannot_have_started(task):
            target = Status.CANCELLING.value
            request = {"requested_at": now_ts(), "by": source}
            stored = task.task_status_data if isinstance(task.task_status_data, dict) else {}
            data = {**stored, "cancel": request}
        outcome = task_transition(
            update=StatusUpdate(task_id=task_id, status=target, status_data=data, source=source, origin=Origin.SERVER)
        )
        if outcome.verdict is not Verdict.APPLY:
            raise TaskConflict(f"Task {task_id!r} is {outcome.from_status}; it cannot be cancelled now")
        if task.run_id:
            transaction.on_commit(partial(dispatch.end_run, task.run_id, End.CANCEL))
    return GlobalTask.objects.get(pk=task_id)


def _cannot_have_started(task: GlobalTask) -> bool:
    """Pending and never published (waiting for its order key, or for a pull agent, which marks what it
    fetches received): no node has it, and publish() sends only what is still pending. Or its node is
    offline: nothing runs there now, and should it come back, the run's cancel marker stops the run
    before it starts (its redelivered message included)."""
    if task.task_status == Status.PENDING and task.dispatched_at is None:
        return True
    return Node.objects.filter(name=task.node, offline_since__isnull=False).exists()


def task_replay(
    *,
    task_id: str,
    task_data: dict[str, Any] | None = None,
    node: str | None = None,
    new_task_id: str | None = None,
    source: str = "",
) -> GlobalTask:
    """Clone a failed or cancelled executed task into a new task, with its task_data (or `task_data`, an
    edited copy): created by task_create, so validated (the type's payload rules, its create-time checks)
    and placed as any create is, with the original's constraints. InvalidInput naming the field if the
    data is refused; TaskConflict if the original may not be replayed (unfinished, completed, tracked).

    It runs on `node`, else on the original's node if the original's create named it (an explicitly
    placed task stays where its creator put it), else where placement picks. A `new_task_id` makes the
    request safe to repeat: the same replay again returns the task it created.

    The link, both ways, without changing either task's status: the new task's first history row says
    "replay of <id> by <source>", and its placement record carries "replay_of"; the original, which stays
    failed or cancelled, lists its replays in task_status_data["replayed_as"]. (Server-side metadata on a
    finished task: its status and its node's report are kept as they were; a later retry of the
    original moves it under "previous_attempt" with the rest of that data.)"""
    with transaction.atomic():
        original = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if original is None:
            raise TaskNotFound(task_id)
        if not original.node:
            raise TaskConflict(
                f"Task {task_id!r} is a tracked task: a record its caller drives, not work taskhub ran; "
                "there is nothing to replay"
            )
        if original.task_status not in (Status.FAILED, Status.CANCELLED):
            raise TaskConflict(
                f"Only a failed or cancelled task can be replayed; task {task_id!r} is {original.task_status}"
            )
        if task_data is not None and not isinstance(task_data, dict):
            raise InvalidInput("task_data: must be a JSON object")
        explicit = original.placement.get("rule") == "explicit" if isinstance(original.placement, dict) else False
        task, created = task_create(
            task_id=new_task_id,
            task_type=original.task_type,
            task_data=original.task_data if task_data is None else task_data,
            execute=True,
            node=node or (original.node if explicit else None),
            constraints=original.constraints or None,
            source=f"replay of {task_id}" + (f" by {source}" if source else ""),
        )
        placement = task.placement if isinstance(task.placement, dict) else {}
        if not created:
            # A repeated request with the same new_task_id: the task it created, or a task not its.
            if placement.get("replay_of") != task_id:
                raise TaskConflict(f"Task {task.task_id!r} exists and is not a replay of task {task_id!r}")
            return task
        GlobalTask.objects.filter(pk=task.task_id).update(placement={**placement, "replay_of": task_id})
        stored = original.task_status_data if isinstance(original.task_status_data, dict) else {}
        earlier = stored.get("replayed_as")
        replays = [*(earlier if isinstance(earlier, list) else []), task.task_id]
        GlobalTask.objects.filter(pk=task_id).update(
            task_status_data={**stored, "replayed_as": replays}, task_update_timestamp=now_ts()
        )
    return GlobalTask.objects.get(pk=task.task_id)
