"""Stalled runs: a task `received` or `in_progress` on a live node that no longer has its run.

The dead-node sweep (tasks_app/fleet/health.py) only acts on silence. A node that is alive may still have
lost a run: the worker restarted and the broker lost the message it would have redelivered, or a report
never left the node. Such a task would stay `in_progress` forever. Modelled on Oban's Lifeline and
Procrastinate's stalled jobs, but judged on what the node itself says: each heartbeat lists the runs the
worker holds and the runs whose reports are still in its outbox (workers/node/running.py, stored on the
Node row by record_heartbeats).

A run is stalled when its node is online, the node's last heartbeat names it in neither list, and that
heartbeat was taken more than TASKHUB_STALLED_GRACE_SECONDS after the task last changed and after the
worker began listing. And the writers must have applied everything in the task's shard of the update
stream that is older than that heartbeat: a report that left the node just before it is on its way, not
lost. The sweep then asks the node how the run ended (workers/protocol/run_asks.py). The node answers
before its next heartbeat (workers/node/lifeline.py): if its run ledger kept the run's outcome, it reports
it through its outbox, as its own report, and the run is listed as undelivered until the writers apply it;
if not, its heartbeat says so (`no_outcome`), and the next sweep fails the run (error type "Stalled") and
retries it where its type's retry limit allows (services.task_retry, which voids the old run); else the
run is voided.

The same sweep enforces per-type run timeouts (workers/protocol/specs.py `run_timeout`,
TASKHUB_RUN_TIMEOUTS): a run `in_progress` for longer than its type allows, counted from its first
`in_progress` in the history (automatic retries included), fails (error type "RunTimeout") and is voided,
so whatever its node says of it later is dropped. But not while a report of the run is on its way, judged
as the stalled check judges it (_report_on_its_way): then the run is left for its report to land, and
judged again on a later pass. Nor on less than the stalled check has: without Redis, no run times out.

Every change goes through the transition function, one task per transaction under the task's row lock,
and only if the task is still as it was judged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery

from tasks_app.errors import TaskConflict
from tasks_app.fleet.models import Node
from tasks_app.fleet.selectors import online_cutoff
from tasks_app.tasks import stream
from tasks_app.tasks.dispatch import end_run
from tasks_app.tasks.models import GlobalTask, StreamOffset, TaskStatusChange
from tasks_app.tasks.services import task_retry
from tasks_app.tasks.transitions import task_transition
from workers.protocol import keys, run_asks, specs
from workers.protocol.messages import Entry, Origin, StatusUpdate
from workers.protocol.run_asks import Ask
from workers.protocol.run_end import End
from workers.protocol.status import Status, Verdict

log = logging.getLogger(__name__)
SOURCE = "scheduler: stalled-run sweep"
JUDGED = (Status.RECEIVED, Status.IN_PROGRESS)


@dataclass(frozen=True)
class SweepResult:
    asked: int = 0  # stalled runs whose node was asked how they ended
    failed: int = 0  # stalled runs their node had no outcome for, failed (retried or not)
    retried: int = 0  # of those, given a new run
    timed_out: int = 0


@dataclass(frozen=True)
class _Stalled:
    task_id: str
    task_type: str
    node: str
    run_id: str
    changed_at: int  # task_update_timestamp when judged: acted on only if it is unchanged
    heartbeat: datetime
    no_outcome: bool  # that heartbeat answered the sweep's question: the node has no outcome for it


def sweep_stalled_runs(limit: int = 500) -> SweepResult:
    """Fail runs past their type's timeout, then deal with stalled runs: ask their node how they ended,
    or fail those it has no outcome for. At most `limit` tasks of each."""
    timed_out = 0
    try:
        behind = _ShardBacklog()
        for run in _past_timeout(limit):
            timed_out += _time_out(run, behind)
        stalled = _stalled(limit, behind)
        asked = _ask([s for s in stalled if not s.no_outcome])
        done = [_fail(s) for s in stalled if s.no_outcome]
    except redis.RedisError as exc:
        # The stream and the questions are in Redis: without them nothing can be judged safely, a run
        # timeout no more than a stalled run (a report on its way may be in the stream).
        log.warning("stalled-run sweep stopped: %s", exc)
        return SweepResult(timed_out=timed_out)
    return SweepResult(
        asked=asked,
        failed=len([d for d in done if d]),
        retried=done.count("retried"),
        timed_out=timed_out,
    )


# --- stalled runs -----------------------------------------------------------------------------------


def _stalled(limit: int, behind: _ShardBacklog) -> list[_Stalled]:
    """Tasks whose node's last heartbeat, taken long enough after their last change, does not name
    their run, and whose shard holds no unapplied entry older than that heartbeat. Raises RedisError."""
    grace = float(settings.TASKHUB_STALLED_GRACE_SECONDS)
    nodes = Node.objects.filter(
        transport=Node.Transport.QUEUE,
        offline_since__isnull=True,
        last_heartbeat__gte=online_cutoff(),
        running_runs__isnull=False,
        runs_reported_at__isnull=False,
        runs_listed_since__isnull=False,
    ).values_list("name", "running_runs", "runs_reported_at", "runs_listed_since")
    found: list[_Stalled] = []
    for name, runs, reported_at, listed_since in nodes:
        if reported_at is None or listed_since is None:
            continue  # filtered out above; for the type checker
        if not isinstance(runs, dict) or runs.get("truncated") is not False:
            continue  # lists cut at their cap (or unreadable): a run may be missing only from the list
        if (reported_at - listed_since).total_seconds() <= grace:
            continue  # the worker has just started: its redelivered messages may not be back yet
        undelivered = set(runs.get("undelivered", []))
        listed = {*runs.get("running", []), *undelivered}
        no_outcome = set(runs.get("no_outcome", []))
        # task_update_timestamp is whole seconds, rounded down: a change stamped T happened before T + 1.
        changed_before = math.floor(reported_at.timestamp() - grace)
        rows = (
            GlobalTask.objects.filter(node=name, task_status__in=JUDGED, task_update_timestamp__lt=changed_before)
            .exclude(run_id="")
            .exclude(run_id__in=sorted(listed))
            .order_by("task_update_timestamp", "task_id")
            .values_list("task_id", "task_type", "run_id", "task_update_timestamp")[: limit - len(found)]
        )
        for task_id, task_type, run_id, changed_at in rows:
            if _report_on_its_way(behind, task_id, run_id, undelivered, sent_before=reported_at):
                continue  # a report sent before the heartbeat may be waiting for a writer
            found.append(_Stalled(task_id, task_type, name, run_id, changed_at, reported_at, run_id in no_outcome))
        if len(found) >= limit:
            break
    return found


def _report_on_its_way(
    behind: _ShardBacklog, task_id: str, run_id: str, undelivered: Collection[str], sent_before: datetime | None
) -> bool:
    """Whether a report of the run may be on its way, not applied yet, so that the run must not be judged
    now: its node's last heartbeat lists the run as undelivered (the report is in the node's outbox), or
    the writers have not applied an entry of the task's shard of the update stream sent before
    `sent_before` (None: any entry of this task in it, or one that may be). Raises RedisError."""
    if run_id in undelivered:
        return True
    if sent_before is None:
        return behind.has_any_of(task_id)
    return behind.has_older(task_id, sent_before)


class _ShardBacklog:
    """The entries not yet applied in each shard of the update stream (read once per sweep): the oldest,
    and for the run timeouts up to BACKLOG_READ of them."""

    BACKLOG_READ = 1000

    def __init__(self) -> None:
        self._oldest: dict[int, datetime | None] = {}
        self._unapplied: dict[int, list[Entry]] = {}
        self._offsets = dict(StreamOffset.objects.values_list("shard", "last_id"))

    def has_any_of(self, task_id: str) -> bool:
        """An unapplied entry of this task is in its shard, or may be: one that cannot be read, or more
        entries than were read. Other tasks' entries do not count, so a busy shard does not hold it up."""
        shard = keys.shard_for(task_id)
        if shard not in self._unapplied:
            self._unapplied[shard] = stream.read_after(shard, self._offsets.get(shard, "0-0"), self.BACKLOG_READ)
        entries = self._unapplied[shard]
        if len(entries) >= self.BACKLOG_READ:
            return True
        return any(e.update.task_id == task_id if e.update is not None else e.heartbeat is None for e in entries)

    def has_older(self, task_id: str, than: datetime) -> bool:
        shard = keys.shard_for(task_id)
        if shard not in self._oldest:
            entries = stream.read_after(shard, self._offsets.get(shard, "0-0"), 1)
            ms = int(entries[0].stream_id.split("-")[0]) if entries else None
            self._oldest[shard] = None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
        oldest = self._oldest[shard]
        return oldest is not None and oldest <= than


def _ask(stalled: list[_Stalled]) -> int:
    """Ask each run's node how it ended (the node answers before its next heartbeat). Returns how many."""
    now = datetime.now(UTC).timestamp()
    by_node: dict[str, dict[str, Ask]] = {}
    for s in stalled:
        by_node.setdefault(s.node, {})[s.run_id] = Ask(s.task_id, s.task_type, now)
    for node, asks in by_node.items():
        run_asks.ask(node, asks)
        log.info("asked node %s how %s run(s) it no longer lists ended: %s", node, len(asks), sorted(asks))
    return len(stalled)


def _fail(stalled: _Stalled) -> str:
    """Fail a run its node has no outcome for, and retry it where the type allows. Returns "retried",
    "failed", or "" if the task had moved on meanwhile. Either way the question is settled."""
    done = _fail_run(stalled)
    run_asks.forget(stalled.node, [stalled.run_id])
    return done


def _fail_run(stalled: _Stalled) -> str:
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=stalled.task_id).first()
        if (
            task is None
            or task.task_status not in JUDGED
            or task.run_id != stalled.run_id
            or task.task_update_timestamp != stalled.changed_at
        ):
            return ""
        message = f"node {stalled.node} no longer runs run {stalled.run_id} and has no outcome for it"
        error = {
            "error": {
                "type": "Stalled",
                "message": message,
                "node": stalled.node,
                "heartbeat": stalled.heartbeat.isoformat(),
            }
        }
        failed = StatusUpdate(task.task_id, Status.FAILED.value, error, source=SOURCE, origin=Origin.SERVER)
        if task_transition(update=failed).verdict is not Verdict.APPLY:
            return ""
        log.warning("task %s: %s", task.task_id, message)
        spec = specs.get(task.task_type)
        if spec is not None and task.attempts < spec.retry_limit():
            try:
                task_retry(task_id=task.task_id, source=SOURCE)  # a new run; the old one is voided
                return "retried"
            except TaskConflict as exc:
                # No node may take it now (its node was cordoned, say): it stays failed, saying why, and
                # the sweep goes on to the next stalled run.
                GlobalTask.objects.filter(pk=task.task_id).update(
                    task_status_data={**error, "not_retried": exc.message}
                )
        # Should the run turn up after all, nothing it says may land.
        transaction.on_commit(partial(end_run, stalled.run_id, End.VOID))
        return "failed"


# --- run timeouts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Overdue:
    task_id: str
    run_id: str
    node: str
    timeout: float
    started: datetime
    lists: object  # the node's last heartbeat's lists of its runs (Node.running_runs), if any
    listed_at: datetime | None  # when that heartbeat was taken


def _past_timeout(limit: int) -> list[_Overdue]:
    """In_progress runs past their type's timeout, with what their node's last heartbeat says of its runs."""
    timeouts = {name: spec.timeout() for name in specs.known() if (spec := specs.get(name)) is not None}
    limits = {name: seconds for name, seconds in timeouts.items() if seconds}
    if not limits:
        return []
    now = datetime.now(UTC)
    # When the current run went in_progress: its first history row saying so.
    started = (
        TaskStatusChange.objects.filter(task=OuterRef("pk"), run_id=OuterRef("run_id"), to_status=Status.IN_PROGRESS)
        .order_by("at", "id")
        .values("at")[:1]
    )
    past = Q()
    for name, seconds in limits.items():
        since = now - timedelta(seconds=seconds)
        # No history row (none is ever missing, but): the last change is the best there is.
        past |= Q(task_type=name) & (
            Q(started__lt=since) | Q(started__isnull=True, task_update_timestamp__lt=int(since.timestamp()))
        )
    rows = list(
        GlobalTask.objects.filter(task_status=Status.IN_PROGRESS, task_type__in=limits)
        .exclude(run_id="")
        .annotate(started=Subquery(started))
        .filter(past)
        .order_by("task_update_timestamp", "task_id")
        .values_list("task_id", "run_id", "node", "task_type", "started", "task_update_timestamp")[:limit]
    )
    said = {
        name: (runs, at)
        for name, runs, at in Node.objects.filter(name__in={r[2] for r in rows}).values_list(
            "name", "running_runs", "runs_reported_at"
        )
    }
    return [
        _Overdue(
            task_id,
            run_id,
            node,
            limits[task_type],
            began or datetime.fromtimestamp(changed, UTC),
            *said.get(node, (None, None)),
        )
        for task_id, run_id, node, task_type, began, changed in rows
    ]


def _outcome_awaited(run: _Overdue, behind: _ShardBacklog) -> bool:
    """Whether the run's outcome may be on its way (raises RedisError). A report that is on its way is
    waited for, whenever it was stamped, even after the deadline: once it lands, the transition rules
    decide, and an outcome that arrives for the task's run is applied (the run did end). Only a run that
    is still running, as far as anyone can tell, past its deadline times out."""
    lists = run.lists if isinstance(run.lists, dict) else None
    undelivered: set[str] = set()
    if lists is not None:  # a node worker's (a pull agent's reports are only ever in the stream)
        running = set(lists.get("running", []))
        if run.listed_at is None or run.listed_at < run.started + timedelta(seconds=run.timeout):
            return True  # not a word from its node since the deadline: an outcome in time may be in its outbox
        if run.run_id not in running and lists.get("truncated") is not False:
            return True  # its undelivered list may have been cut
        # A run still held has no outcome yet (it leaves `running` only once its outcome is in the outbox):
        # a report of it in the outbox is a progress one.
        undelivered = set(lists.get("undelivered", [])) - running
    return _report_on_its_way(behind, run.task_id, run.run_id, undelivered, sent_before=None)


def _time_out(run: _Overdue, behind: _ShardBacklog) -> int:
    if _outcome_awaited(run, behind):
        log.debug("task %s: run %s is past its timeout, but its outcome may be on its way", run.task_id, run.run_id)
        return 0
    task_id, run_id, node, timeout, started = run.task_id, run.run_id, run.node, run.timeout, run.started
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None or task.task_status != Status.IN_PROGRESS or task.run_id != run_id:
            return 0
        message = (
            f"run {run_id} of this {task.task_type} task ran longer than its timeout of {timeout:g}s "
            f"(in_progress since {started:%Y-%m-%d %H:%M:%S} UTC on node {node})"
        )
        error = {"error": {"type": "RunTimeout", "message": message, "node": node, "timeout_seconds": timeout}}
        failed = StatusUpdate(task_id, Status.FAILED.value, error, source=SOURCE, origin=Origin.SERVER)
        if task_transition(update=failed).verdict is not Verdict.APPLY:
            return 0
        # The node may still be running it: it stops at its next safe point, and its reports are dropped.
        transaction.on_commit(partial(end_run, run_id, End.VOID))
    log.warning("task %s: %s", task_id, message)
    return 1
