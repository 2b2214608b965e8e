"""Taking a node out of service and back: cordon, drain, uncordon (Kubernetes' words, and meanings).

cordon: placement gives the node no new task (tasks_app/fleet/placement.py); what it has, it runs.
drain: cordoned, and its pending tasks (no node has them yet) move to other nodes that may take them,
each through the one transition function (pending -> pending, a new run, a history row naming both
nodes); the ones its node already runs finish there, and the node is drained once none is left. A
pending task that no other node may run (its type runs on the one node its task_data names, or every
other candidate is cordoned, lacks a label or capacity) stays, and the answer lists it with the reason.
uncordon: schedulable again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from tasks_app.fleet.models import Node
from tasks_app.fleet.placement import Placement, choose, rule_for
from tasks_app.tasks.models import GlobalTask
from tasks_app.tasks.services import task_move
from workers.protocol import specs
from workers.protocol.status import RUNNING, Status

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    node: str
    moved: list[dict[str, str]] = field(default_factory=list)  # {"task_id", "to"}
    stayed: list[dict[str, str]] = field(default_factory=list)  # {"task_id", "reason"}
    running: list[str] = field(default_factory=list)  # task ids its node has, that finish there

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "moved": self.moved, "stayed": self.stayed, "running": self.running}


def _set(node: Node, scheduling: str) -> Node:
    Node.objects.filter(pk=node.pk).update(scheduling=scheduling)
    node.scheduling = scheduling
    log.info("node %s is now %s", node.name, scheduling)
    return node


def node_cordon(*, node: Node) -> Node:
    """No new tasks for this node. A draining node stays draining (it is cordoned already)."""
    if node.scheduling == Node.Scheduling.DRAINING:
        return node
    return _set(node, Node.Scheduling.CORDONED)


def node_uncordon(*, node: Node) -> Node:
    return _set(node, Node.Scheduling.SCHEDULABLE)


def node_drain(*, node: Node, source: str, limit: int = 10_000) -> DrainReport:
    """Cordon the node (committed first, so that nothing new lands on it meanwhile) and move its pending
    tasks away, oldest first, one transaction each. The tasks of one ordering key go to one node, as
    placement would put them. Safe to repeat: a second drain moves what a first one could not."""
    _set(node, Node.Scheduling.DRAINING)
    report = DrainReport(node.name)
    followed: dict[str, str] = {}  # ordering key -> the node its moved tasks went to
    pending = (
        GlobalTask.objects.filter(node=node.name, task_status=Status.PENDING)
        .order_by("created_ns", "task_id")
        .values_list("task_id", flat=True)
    )
    for task_id in list(pending[:limit]):
        _move_one(task_id, node.name, source, followed, report)
    running = GlobalTask.objects.filter(node=node.name, task_status__in=RUNNING).order_by("created_ns")
    report.running = list(running.values_list("task_id", flat=True)[:limit])
    return report


def _move_one(task_id: str, away_from: str, source: str, followed: dict[str, str], report: DrainReport) -> None:
    # One transaction from reading where the task may go to moving it there: the capacity placement found
    # free (and locked) is still free when the moved task reserves it.
    with transaction.atomic():
        task = GlobalTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None or task.node != away_from or task.task_status != Status.PENDING:
            return  # a node took it, it ended, or it moved, meanwhile
        spec = specs.get(task.task_type)
        if spec is None or not spec.reassignable:
            report.stayed.append({"task_id": task_id, "reason": f"{task.task_type} runs only on the node it was given"})
            return
        others = [n for n in spec.participants(task.task_data) if n != away_from]
        key_nodes = {task.order_key: followed[task.order_key]} if task.order_key in followed else None
        placement = Placement(key_nodes=key_nodes)
        known = [n for n, info in placement.nodes(others).items() if info is not None]
        if not known:
            report.stayed.append({"task_id": task_id, "reason": "no other registered node takes part in it"})
            return
        rule = rule_for(task.task_type)
        choice = choose(
            task_type=task.task_type,
            candidates=known,
            constraints=task.constraints or {},
            placement=placement,
            key=task.order_key,
            rule=rule if rule != "explicit" else "balanced",
        )
        if choice.unschedulable:
            report.stayed.append({"task_id": task_id, "reason": choice.unschedulable})
            return
        task_move(
            task_id=task_id,
            node=choice.node,
            source=f"{source}: drain of {away_from}, moved to {choice.node}"[:128],
            record=choice.record,
        )
    if task.order_key:
        followed[task.order_key] = choice.node
    report.moved.append({"task_id": task_id, "to": choice.node})
