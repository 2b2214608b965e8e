"""Dead nodes: a node that misses heartbeats for TASKHUB_NODE_OFFLINE_SECONDS is marked offline,
and its unfinished tasks are failed with the reason, or moved to another online participant when
the task type allows it. Only silence counts: a live node heartbeats from its own thread while its
handlers run, so a long task on a live node is never taken away."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from tasks_app.cluster_selectors import online_cutoff
from tasks_app.dispatch import UNFINISHED, least_loaded, void_attempt
from tasks_app.models import GlobalTask, Node
from tasks_app.services import task_retry
from tasks_app.status import Verdict
from tasks_app.transitions import StatusUpdate, task_transition
from workers import heartbeat, registry

log = logging.getLogger(__name__)
SOURCE = "scheduler: dead-node sweep"


def sweep_dead_nodes() -> int:
    """Mark newly silent nodes offline and deal with their tasks. Returns how many nodes went offline."""
    cutoff = online_cutoff()
    silent = Node.objects.filter(
        transport=Node.Transport.QUEUE,
        state=Node.State.MEMBER,
        offline_since__isnull=True,
        last_heartbeat__lt=cutoff,
    )
    went = 0
    for node in silent:
        if heartbeat.alive(node.name):
            # The node's own key (Redis keeps its time to live) says it is alive: the writers are
            # only behind. Never take a live node's tasks away.
            continue
        claimed = Node.objects.filter(pk=node.pk, offline_since__isnull=True, last_heartbeat__lt=cutoff).update(
            offline_since=datetime.now(UTC)
        )
        if not claimed:
            continue  # it heartbeat meanwhile, or another sweep got it
        went += 1
        assert node.last_heartbeat is not None
        reason = (
            f"node {node.name} went offline: no heartbeat since {node.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC "
            f"(limit {settings.TASKHUB_NODE_OFFLINE_SECONDS}s)"
        )
        log.warning(reason)
        unfinished = GlobalTask.objects.filter(node=node.name, task_status__in=UNFINISHED).order_by("task_id")
        for task_id in unfinished.values_list("task_id", flat=True):
            # One transaction per task, taking only task locks, like the writers: no lock-order cycle.
            with transaction.atomic():
                _fail_or_move(task_id, node.name, reason)
    return went


def _fail_or_move(task_id: str, dead: str, reason: str) -> None:
    task = GlobalTask.objects.select_for_update().get(pk=task_id)
    error = {"error": {"type": "NodeOffline", "message": reason, "node": dead}}
    if task_transition(update=StatusUpdate(task_id, "failed", error, source=SOURCE)).verdict is not Verdict.APPLY:
        return
    ttype = registry.get(task.task_type)
    others = list(ttype.participants(task.task_data)) if ttype is not None and ttype.reassignable else []
    target = least_loaded([n for n in others if n != dead])
    if target:
        # Moved: the retry service gives it a new attempt on a live participant (it also voids the
        # dead node's attempt and publishes after commit).
        note = {"reassigned": {"from": dead, "to": target, "reason": reason}}
        task_retry(task_id=task_id, source=SOURCE, node=target, note=note)
    else:
        # Should the node come back, its queued copy of this attempt must not run.
        transaction.on_commit(lambda: void_attempt(task_id, task.attempts))  # best effort, never raises
