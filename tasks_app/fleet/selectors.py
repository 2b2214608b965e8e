"""Reads of clusters, nodes and volumes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404

from tasks_app.fleet.models import Cluster, Node, Volume
from tasks_app.tasks.models import GlobalTask
from tasks_app.tasks.selectors import order_key_blockers
from workers.protocol.status import UNFINISHED, Status


def _by_id_or_name(qs: QuerySet[Cluster] | QuerySet[Node], ref: str, what: str) -> Cluster | Node:
    try:
        found = qs.filter(pk=uuid.UUID(ref)).first()
    except ValueError:
        found = qs.filter(name=ref).first()
    if found is None:
        raise Http404(f"No {what} {ref!r}")
    return found


def cluster_get(*, ref: str) -> Cluster:
    found = _by_id_or_name(Cluster.objects.all(), ref, "cluster")
    assert isinstance(found, Cluster)
    return found


def node_get(*, ref: str, cluster: Cluster | None = None) -> Node:
    qs = Node.objects.select_related("cluster")
    found = _by_id_or_name(qs.filter(cluster=cluster) if cluster else qs, ref, "node")
    assert isinstance(found, Node)
    return found


def online_cutoff() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=settings.TASKHUB_NODE_OFFLINE_SECONDS)


def node_is_online(node: Node) -> bool:
    return node.last_heartbeat is not None and node.last_heartbeat >= online_cutoff()


def node_list(*, cluster: Cluster | None = None) -> QuerySet[Node]:
    qs = Node.objects.select_related("cluster")
    return qs.filter(cluster=cluster) if cluster else qs


def volume_list(*, cluster: Cluster) -> QuerySet[Volume]:
    return Volume.objects.filter(cluster=cluster).prefetch_related("storage_units__node")


def volume_get(*, cluster: Cluster, name: str) -> Volume:
    found = volume_list(cluster=cluster).filter(name=name).first()
    if found is None:
        raise Http404(f"No volume {name!r} in cluster {cluster.name!r}")
    return found


def node_open_tasks(*, node: Node, since: int | None = None) -> QuerySet[GlobalTask]:
    """Tasks assigned to a node that are not finished yet, oldest first (Kadalu's pull API); a
    cancelling one among them is for the agent to stop."""
    # The same turn as the queue's dispatch (tasks_app/tasks/dispatch.py).
    waiting = order_key_blockers(
        task_id=OuterRef("pk"), order_key=OuterRef("order_key"), created_ns=OuterRef("created_ns")
    ).exclude(order_key="")
    qs = (
        GlobalTask.objects.filter(node=node.name, task_status__in=UNFINISHED)
        .exclude(Q(task_status=Status.PENDING) & Exists(waiting))
        .order_by("task_create_timestamp", "task_id")
    )
    if since is not None:
        qs = qs.filter(task_create_timestamp__gt=since)
    return qs
