"""Dead nodes: a node that misses heartbeats for TASKHUB_NODE_OFFLINE_SECONDS, or has never sent one
that long after it was registered, is marked offline. Its unfinished tasks are failed with the reason,
or moved to another online participant when the task type allows it; a task it was cancelling ends
cancelled, since nothing runs there any more. Only silence counts: a live node heartbeats from its own
thread while its handlers run, so a long task on a live node is never taken away."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from tasks_app.fleet.models import Node
from tasks_app.fleet.placement import Placement, choose
from tasks_app.fleet.selectors import online_cutoff
from tasks_app.tasks.dispatch import end_run
from tasks_app.tasks.models import GlobalTask
from tasks_app.tasks.services import task_retry
from tasks_app.tasks.transitions import task_transition
from workers.protocol import specs
from workers.protocol.liveness import alive
from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.run_end import End
from workers.protocol.status import UNFINISHED, Status, Verdict

log = logging.getLogger(__name__)
SOURCE = "scheduler: dead-node sweep"


def sweep_dead_nodes() -> int:
    """Mark newly silent nodes offline and deal with their tasks. Returns how many nodes went offline."""
    cutoff = online_cutoff()
    silent_since = Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True, registered_at__lt=cutoff)
    # Any registered node that runs a worker: a member, or one joining (its node_addition waits on it).
    silent = Node.objects.filter(silent_since, transport=Node.Transport.QUEUE, offline_since__isnull=True)
    went = 0
    for node in silent:
        if alive(node.name):
            # The node's own key (Redis keeps its time to live) says it is alive: the writers are
            # only behind. Never take a live node's tasks away.
            continue
        claimed = Node.objects.filter(silent_since, pk=node.pk, offline_since__isnull=True).update(
            offline_since=datetime.now(UTC)
        )
        if not claimed:
            continue  # it heartbeat meanwhile, or another sweep got it
        went += 1
        if node.last_heartbeat is None:
            since = f"it has sent none since it was registered at {node.registered_at:%Y-%m-%d %H:%M:%S} UTC"
        else:
            since = f"no heartbeat since {node.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC"
        reason = f"node {node.name} went offline: {since} (limit {settings.TASKHUB_NODE_OFFLINE_SECONDS}s)"
        log.warning(reason)
        unfinished = GlobalTask.objects.filter(node=node.name, task_status__in=UNFINISHED).order_by("task_id")
        for task_id in unfinished.values_list("task_id", flat=True):
            # One transaction per task, taking only task locks, like the writers: no lock-order cycle.
            with transaction.atomic():
                _end_or_move(task_id, node.name, reason)
    return went


def _end_or_move(task_id: str, dead: str, reason: str) -> None:
    task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
    if task is None or task.task_status not in UNFINISHED:
        return
    if task.task_status == Status.CANCELLING:
        # Nothing runs on a dead node: the cancel is done.
        data = {"node": dead, "cancelled": {"message": reason, "stopped": "its node went offline"}}
        task_transition(update=StatusUpdate(task_id, "cancelled", data, source=SOURCE, origin=Origin.SERVER))
        transaction.on_commit(partial(end_run, task.run_id, End.VOID))
        return
    error = {"error": {"type": "NodeOffline", "message": reason, "node": dead}}
    outcome = task_transition(update=StatusUpdate(task_id, "failed", error, source=SOURCE, origin=Origin.SERVER))
    if outcome.verdict is not Verdict.APPLY:
        return
    spec = specs.get(task.task_type)
    others = list(spec.participants(task.task_data)) if spec is not None and spec.reassignable else []
    placement = Placement()
    live = [n for n, info in placement.nodes([n for n in others if n != dead]).items() if info and info.online]
    choice = (
        choose(
            task_type=task.task_type, candidates=live, constraints=task.constraints or {}, placement=placement,
            rule="balanced",
        )
        if live
        else None
    )  # fmt: skip
    if choice is not None and choice.node:
        # Moved: the retry service gives it a new run on a live participant that may take it (it also
        # ends the dead node's run and publishes after commit).
        note = {"reassigned": {"from": dead, "to": choice.node, "reason": reason}}
        record = {**choice.record, "reassigned_from": dead}
        task_retry(task_id=task_id, source=SOURCE, node=choice.node, note=note, placement=record)
    else:
        # Should the node come back, its queued copy of this run must not run.
        transaction.on_commit(partial(end_run, task.run_id, End.VOID))
