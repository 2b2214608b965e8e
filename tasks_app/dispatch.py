"""Getting executable tasks to their node: assignment at create time, publishing after commit, and
the sweep that publishes whatever a crash or a broker outage left unpublished."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db.models import Count, Q

from tasks_app import domain
from tasks_app.cluster_selectors import online_cutoff
from tasks_app.errors import InvalidInput
from tasks_app.models import GlobalTask, Node, now_ts
from tasks_app.status import Status
from workers import registry
from workers.errors import PayloadError
from workers.handlers.payload import NAME_RE
from workers.queues import EXECUTE_TASK, node_queue

log = logging.getLogger(__name__)

UNFINISHED = (Status.PENDING, Status.RECEIVED, Status.IN_PROGRESS)


@dataclass(frozen=True)
class Prepared:
    task_data: dict[str, Any]
    node: str = ""
    order_key: str = ""


def order_key_for(task_type: str, data: dict[str, Any]) -> str:
    """Tasks that must run in order on one node share a key: one volume's create/start/stop/delete."""
    if task_type.startswith("volume_") and "cluster" in data and "name" in data:
        return f"volume:{data['cluster']}:{data['name']}"
    return ""


def prepare(*, task_type: str, task_data: dict[str, Any], node: str | None) -> Prepared:
    """Validate an executable task's payload and pick its node.

    Types nobody registered are plain records (the seed's pattern: an outside service does the work
    and reports through /task_update), unless the caller asked for a node to run them.
    """
    ttype = registry.get(task_type)
    if ttype is None:
        if node:
            raise InvalidInput(
                f"task_type {task_type!r} is not an executable type; known types: {', '.join(registry.known())}"
            )
        return Prepared(task_data)
    try:
        data = ttype.validate(dict(task_data))
    except PayloadError as exc:
        raise InvalidInput(f"task_data.{exc.field}: {exc.message}") from exc
    data = domain.check(task_type, data)
    participants = ttype.participants(data)
    if node and participants and node not in participants:
        raise InvalidInput(f"node: {node!r} does not take part in this task; choose one of {', '.join(participants)}")
    if node and not NAME_RE.match(node):
        raise InvalidInput("node: must be a node name of 1-64 letters, digits, '.', '_' or '-'")
    key = order_key_for(task_type, data)
    assigned = node or _ordered_node(key) or _by_rule(task_type, participants)
    if not assigned:
        raise InvalidInput(f"a {task_type} task must name the node to run on ('node')")
    return Prepared(data, assigned, key)


def _ordered_node(key: str) -> str:
    """Whatever the rule, a task follows the node of the earlier tasks it depends on."""
    if not key:
        return ""
    earlier = GlobalTask.objects.filter(order_key=key).exclude(node="").order_by("-created_ns")
    return str(earlier.values_list("node", flat=True).first() or "")


def _by_rule(task_type: str, participants: list[str]) -> str:
    rule = settings.TASKHUB_ASSIGNMENT.get(task_type, "first")
    if rule == "explicit":
        raise InvalidInput(f"{task_type} tasks are assigned explicitly: name the node to run on ('node')")
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
    """Publish one pending task to its node's queue. Safe to call twice: the node runs it once.

    A task whose order key has an earlier unfinished task waits; publish_next releases it."""
    row = (
        GlobalTask.objects.filter(pk=task_id, task_status=Status.PENDING)
        .exclude(node="")
        .values("task_type", "task_data", "node", "attempts", "order_key", "created_ns")
        .first()
    )
    if row is None:
        return False
    if row["order_key"] and _has_unfinished_before(row["order_key"], row["created_ns"]):
        return False
    if Node.objects.filter(name=row["node"], transport=Node.Transport.PULL).exists():
        return False  # that node fetches its tasks itself (GET /api/v1/tasks/<cluster>/<node>)
    try:
        current_app.send_task(
            EXECUTE_TASK,
            task_id=task_id,  # the Celery id is ours, so a cancel can revoke it by name
            kwargs={
                "task_id": task_id,
                "task_type": row["task_type"],
                "task_data": row["task_data"],
                "node": row["node"],
                "attempt": row["attempts"],
            },
        )
    except Exception as exc:  # kombu raises many kinds; any of them means "not published"
        log.warning("publishing task %s to %s failed (the sweep will retry): %s", task_id, row["node"], exc)
        return False
    GlobalTask.objects.filter(pk=task_id).update(dispatched_at=now_ts())
    return True


def _has_unfinished_before(key: str, created_ns: int) -> bool:
    return GlobalTask.objects.filter(order_key=key, created_ns__lt=created_ns, task_status__in=UNFINISHED).exists()


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
        .exclude(node__in=Node.objects.filter(transport=Node.Transport.PULL).values("name"))
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
    return published


def _queue_length(node: str) -> int:
    try:
        with current_app.connection_for_write() as conn:
            client = conn.default_channel.client  # type: ignore[attr-defined]  # kombu's redis channel
            return int(client.llen(node_queue(node)))
    except (redis.RedisError, AttributeError):
        return 0



def revoke(task_id: str) -> None:
    """Tell the nodes a cancelled task must not run or go on: a marker every node checks, and a
    Celery revoke for a message still waiting in a worker. Best effort: the status is already final."""
    from workers.cancel import mark_cancelled

    try:
        mark_cancelled(task_id)
        current_app.control.revoke(task_id)
    except Exception as exc:  # a broker outage must not turn a done cancel into an error
        log.warning("could not signal the cancel of %s to the nodes: %s", task_id, exc)


def void_attempt(task_id: str, attempt: int) -> None:
    """Best effort, like revoke: an ended attempt's queued message must not run on its node."""
    from workers.cancel import void_attempt as mark

    try:
        mark(task_id, attempt)
    except Exception as exc:
        log.warning("could not void attempt %s of %s: %s", attempt, task_id, exc)
