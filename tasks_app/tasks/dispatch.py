"""Getting executed tasks to their node: validation and assignment at create time, publishing a run
after commit, the sweep that publishes whatever a crash or a broker outage left unpublished, and
telling a node that a run must stop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from tasks_app.errors import InvalidInput
from tasks_app.families import registry as families
from tasks_app.fleet.models import Node
from tasks_app.fleet.selectors import online_cutoff
from tasks_app.ops.breaker import is_outage, redis_breaker, server_of
from tasks_app.tasks.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.tasks.selectors import order_key_blockers
from workers.protocol import run_end, specs
from workers.protocol.errors import PayloadError
from workers.protocol.messages import ExecuteKwargs
from workers.protocol.payload import NAME_RE
from workers.protocol.queues import EXECUTE_TASK, TASK_ID_HEADER, node_queue
from workers.protocol.status import UNFINISHED, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    task_data: dict[str, Any]
    node: str = ""
    order_key: str = ""


def executable(task_type: str) -> bool:
    return specs.get(task_type) is not None


def prepare(*, task_type: str, task_data: dict[str, Any], node: str | None, task_id: str) -> Prepared:
    """Validate an executed task's payload, run its family's create-time checks, and pick its node,
    which must be registered (as must every participant)."""
    spec = specs.get(task_type)
    if spec is None:
        raise InvalidInput(
            f"task_type: {task_type!r} is not an executable type; known types: {', '.join(specs.known())}"
        )
    if node and not NAME_RE.match(node):
        raise InvalidInput("node: must be a node name of 1-64 letters, digits, '.', '_' or '-'")
    try:
        data = spec.validate(dict(task_data))
    except PayloadError as exc:
        raise InvalidInput(f"task_data.{exc.field}: {exc.message}") from exc
    data = families.check(task_type, task_id, data)
    participants = spec.participants(data)
    if node and participants and node not in participants:
        raise InvalidInput(f"node: {node!r} does not take part in this task; choose one of {', '.join(participants)}")
    key = spec.order_key(data)
    assigned = node or _ordered_node(key, participants) or _by_rule(task_type, participants)
    if not assigned:
        raise InvalidInput(f"node: a {task_type} task must name the node to run on")
    _require_registered(assigned, participants, explicit=bool(node))
    return Prepared(data, assigned, key)


def _require_registered(assigned: str, participants: list[str], *, explicit: bool) -> None:
    """A task for a node nobody registered would wait forever: refuse it now."""
    names = list(dict.fromkeys([assigned, *participants]))
    known = set(Node.objects.filter(name__in=names).values_list("name", flat=True))
    missing = [n for n in names if n not in known]
    if missing:
        field = "node" if explicit and missing[0] == assigned else "task_data"
        raise InvalidInput(f"{field}: node {missing[0]!r} is not registered; register it first (POST /api/v1/nodes/)")


def _ordered_node(key: str, participants: list[str]) -> str:
    """Whatever the rule, a task follows the node of the earlier tasks it depends on (if it may)."""
    if not key:
        return ""
    earlier = GlobalTask.objects.filter(order_key=key).exclude(node="").order_by("-created_ns")
    found = str(earlier.values_list("node", flat=True).first() or "")
    return found if found and (not participants or found in participants) else ""


def _by_rule(task_type: str, participants: list[str]) -> str:
    rule = settings.TASKHUB_ASSIGNMENT.get(task_type, "first")
    if rule == "explicit":
        raise InvalidInput(f"node: {task_type} tasks are assigned explicitly; name the node to run on")
    if not participants:
        return ""
    if rule == "least_loaded":
        return least_loaded(participants) or participants[0]
    return participants[0]


def least_loaded(candidates: list[str]) -> str:
    """The online candidate with the fewest unfinished tasks (ties: the earlier in the list)."""
    online = set(
        Node.objects.filter(name__in=candidates, last_heartbeat__gte=online_cutoff()).values_list("name", flat=True)
    )
    if not online:
        return ""
    load = dict(
        GlobalTask.objects.filter(node__in=online, task_status__in=UNFINISHED)
        .values_list("node")
        .annotate(n=Count("task_id"))
        .values_list("node", "n")
    )
    return min((c for c in candidates if c in online), key=lambda c: (load.get(c, 0), candidates.index(c)))


def publish(task_id: str) -> bool:
    """Publish the current run of one pending task to its node's queue. Safe to call twice: the node
    runs a run once. A task waits while another task of its ordering key is before it and unfinished,
    or is running; publish_next releases it."""
    row = _run_row(GlobalTask.objects.filter(pk=task_id, task_status=Status.PENDING))
    if row is None:
        return False
    if (
        row["order_key"]
        and order_key_blockers(task_id=task_id, order_key=row["order_key"], created_ns=row["created_ns"]).exists()
    ):
        return False
    if Node.objects.filter(name=row["node"], transport=Node.Transport.PULL).exists():
        return False  # that node fetches its tasks itself (GET /api/v1/tasks/<cluster>/<node>)
    return _send_run(task_id, row)


# What a run's message is made of (and what publish() checks before it sends one).
_RUN_FIELDS = ("task_type", "task_data", "node", "attempts", "order_key", "created_ns", "run_id")


def _run_row(qs: QuerySet[GlobalTask]) -> dict[str, Any] | None:
    row = qs.exclude(node="").values(*_RUN_FIELDS).first()
    return dict(row) if row is not None else None


def _pull_nodes() -> QuerySet[Node, str]:
    """Names of the nodes that fetch their tasks themselves: nothing is published to them."""
    return Node.objects.filter(transport=Node.Transport.PULL).values_list("name", flat=True)


def _send_run(task_id: str, row: dict[str, Any]) -> bool:
    kwargs: ExecuteKwargs = {
        "task_id": task_id,
        "run_id": row["run_id"],
        "task_type": row["task_type"],
        "task_data": row["task_data"],
        "node": row["node"],
        "attempt": row["attempts"],
    }
    # A broker that failed moments ago is not tried again until the breaker's wait is over: an executed
    # create commits either way, and must not pay the broker's timeout on every request of an outage.
    broker = server_of(str(current_app.conf.broker_url))
    if not redis_breaker.allows(broker):
        log.info(
            "task %s not published to %s: the broker failed moments ago (the sweep will retry)", task_id, row["node"]
        )
        return False
    try:
        # The Celery id is the run id, so a cancel revokes exactly this run. One attempt (retry=False, and
        # the server's broker settings bound it: taskhub/settings.py): the sweep is the retry.
        current_app.send_task(
            EXECUTE_TASK, task_id=row["run_id"], kwargs=dict(kwargs), headers={TASK_ID_HEADER: task_id}, retry=False
        )
    except Exception as exc:  # kombu raises many kinds; any of them means "not published"
        if is_outage(exc):
            redis_breaker.failed(broker)
        log.warning("publishing task %s to %s failed (the sweep will retry): %s", task_id, row["node"], exc)
        return False
    redis_breaker.succeeded(broker)
    GlobalTask.objects.filter(pk=task_id, run_id=row["run_id"]).update(dispatched_at=now_ts())
    return True


def publish_next(order_key: str) -> bool:
    """A task of this key finished: publish the oldest pending one, if any."""
    nxt = (
        GlobalTask.objects.filter(order_key=order_key, task_status=Status.PENDING)
        .order_by("created_ns")
        .values_list("task_id", flat=True)
        .first()
    )
    return publish(nxt) if nxt else False


def sweep(limit: int = 500) -> int:
    """Publish pending tasks that were never published, or whose message seems lost. Returns the count."""
    now = now_ts()
    # Measured from the last update: a retry or a move resets dispatched_at and publishes on commit
    # itself, and the sweep must not race that publish.
    never = Q(dispatched_at__isnull=True, task_update_timestamp__lte=now - settings.TASKHUB_DISPATCH_GRACE_SECONDS)
    stale = Q(dispatched_at__lte=now - settings.TASKHUB_REDISPATCH_SECONDS)
    rows = list(
        GlobalTask.objects.filter(never | stale, task_status=Status.PENDING)
        .exclude(node="")
        .exclude(node__in=_pull_nodes())
        .order_by("task_create_timestamp")
        .values_list("task_id", "node", "dispatched_at")[:limit]
    )
    published = 0
    for task_id, node, dispatched_at in rows:
        # A task published before and still queued is just waiting for a busy or offline node.
        if dispatched_at is not None and _queue_length(node) > 0:
            continue
        published += publish(task_id)
    if published:
        log.info("sweep published %s task(s)", published)
    return published + _resend_unconfirmed_cancels(now, limit)


def _resend_unconfirmed_cancels(now: int, limit: int) -> int:
    """A cancelling task that no node has reported on for its current run, published long enough ago,
    whose node's queue is empty: its message may be lost, and then no node would ever confirm the
    cancel. Its run is sent again: the node refuses it (the run's cancel marker) and reports cancelled."""
    reached = TaskStatusChange.objects.filter(
        task_id=OuterRef("pk"), run_id=OuterRef("run_id"), to_status__in=(Status.RECEIVED, Status.IN_PROGRESS)
    )
    waiting = (
        GlobalTask.objects.filter(
            task_status=Status.CANCELLING, dispatched_at__lte=now - settings.TASKHUB_REDISPATCH_SECONDS
        )
        .exclude(node="")
        .exclude(node__in=_pull_nodes())
        .exclude(Exists(reached))
        .order_by("task_update_timestamp")
        .values("task_id", *_RUN_FIELDS)
    )
    sent = 0
    for row in list(waiting[:limit]):
        if _queue_length(row["node"]) == 0:
            sent += _send_run(row["task_id"], row)
    if sent:
        log.info("sweep sent %s cancelled run(s) again, for their nodes to confirm", sent)
    return sent


def _queue_length(node: str) -> int:
    try:
        with current_app.connection_for_write() as conn:
            client = conn.default_channel.client  # type: ignore[attr-defined]  # kombu's redis channel
            return int(client.llen(node_queue(node)))
    except (redis.RedisError, AttributeError):
        return 0


def end_run(run_id: str, why: run_end.End) -> None:
    """Tell the nodes a run must stop: its end marker, which every node reads before it starts the run,
    at the handler's safe points and before each report, and a Celery revoke for a message still
    waiting in a worker. Best effort: a broker outage must not turn a done cancel into an error."""
    if not run_id:
        return
    try:
        run_end.mark(run_id, why)
        current_app.control.revoke(run_id)
    except Exception as exc:
        log.warning("could not tell the nodes that run %s must stop (%s): %s", run_id, why.value, exc)
