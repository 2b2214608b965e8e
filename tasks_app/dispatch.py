"""Getting executable tasks to their node: assignment at create time, publishing after commit, and
the sweep that publishes whatever a crash or a broker outage left unpublished."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db.models import Q

from tasks_app import domain
from tasks_app.errors import InvalidInput
from tasks_app.models import GlobalTask, Node, now_ts
from tasks_app.status import Status
from workers import registry
from workers.errors import PayloadError
from workers.handlers.payload import NAME_RE
from workers.queues import EXECUTE_TASK, node_queue

log = logging.getLogger(__name__)


def prepare(*, task_type: str, task_data: dict[str, Any], node: str | None) -> tuple[dict[str, Any], str]:
    """Validate an executable task's payload and pick its node. Returns (task_data, node).

    Types nobody registered are plain records (the seed's pattern: an outside service does the work
    and reports through /task_update), unless the caller asked for a node to run them.
    """
    ttype = registry.get(task_type)
    if ttype is None:
        if node:
            raise InvalidInput(
                f"task_type {task_type!r} is not an executable type; known types: {', '.join(registry.known())}"
            )
        return task_data, ""
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
    assigned = node or (participants[0] if participants else "")
    if not assigned:
        raise InvalidInput(f"a {task_type} task must name the node to run on ('node')")
    return data, assigned


def publish(task_id: str) -> bool:
    """Publish one pending task to its node's queue. Safe to call twice: the node runs it once."""
    row = (
        GlobalTask.objects.filter(pk=task_id, task_status=Status.PENDING)
        .exclude(node="")
        .values("task_type", "task_data", "node", "attempts")
        .first()
    )
    if row is None:
        return False
    if Node.objects.filter(name=row["node"], transport=Node.Transport.PULL).exists():
        return False  # that node fetches its tasks itself (GET /api/v1/tasks/<cluster>/<node>)
    try:
        current_app.send_task(
            EXECUTE_TASK,
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


def sweep(limit: int = 500) -> int:
    """Publish pending tasks that were never published, or whose message seems lost. Returns the count."""
    now = now_ts()
    never = Q(dispatched_at__isnull=True, task_create_timestamp__lte=now - settings.TASKHUB_DISPATCH_GRACE_SECONDS)
    stale = Q(dispatched_at__lte=now - settings.TASKHUB_REDISPATCH_SECONDS)
    rows = list(
        GlobalTask.objects.filter(never | stale, task_status=Status.PENDING)
        .exclude(node="")
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

