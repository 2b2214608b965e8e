"""Reads of clusters, nodes and volumes."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
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


def node_clusters() -> dict[str, str]:
    """node name -> its cluster's name, for every node."""
    return dict(Node.objects.values_list("name", "cluster__name"))


def unknown_clusters(names: Sequence[str]) -> list[str]:
    """Those of these cluster names that name no cluster."""
    return sorted(set(names) - set(Cluster.objects.filter(name__in=names).values_list("name", flat=True)))


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


@dataclass
class Load:
    """A node's unfinished tasks, and the capacity they reserve (tasks_app/fleet/placement.py)."""

    unfinished: int = 0
    reserved: dict[str, int] = field(default_factory=dict)


def node_loads(names: list[str]) -> dict[str, Load]:
    """Each named node's load: two queries whatever the number of nodes (the task_node_status index)."""
    unfinished, reserved = node_unfinished_counts(names), node_reserved(names)
    return {n: Load(unfinished[n], reserved[n]) for n in names}


def node_unfinished_counts(names: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    if names:
        open_tasks = GlobalTask.objects.filter(node__in=names, task_status__in=UNFINISHED)
        # count(*), not count(task_id): an index-only scan of task_node_status.
        for node, n in open_tasks.values_list("node").annotate(n=Count("*")).values_list("node", "n"):
            counts[node] = n
    return counts


def node_reserved(names: list[str]) -> dict[str, dict[str, int]]:
    """Capacity each node's unfinished tasks reserve: the sum of what they asked for (placement.py). Only the
    tasks that asked for capacity are read (few: those that state constraints)."""
    sums: dict[str, Counter[str]] = {n: Counter() for n in names}
    if names:
        asked = GlobalTask.objects.filter(node__in=names, task_status__in=UNFINISHED, constraints__has_key="capacity")
        for node, constraints in asked.values_list("node", "constraints"):
            need = constraints.get("capacity") if isinstance(constraints, dict) else None
            if isinstance(need, dict):
                sums[node].update({k: v for k, v in need.items() if isinstance(v, int) and not isinstance(v, bool)})
    return {n: dict(sums[n]) for n in names}


def drained(node: Node, load: Load) -> bool:
    """Draining, and no unfinished task left (tasks_app/fleet/scheduling.py)."""
    return node.scheduling == Node.Scheduling.DRAINING and load.unfinished == 0


def node_last_assigned(names: list[str]) -> dict[str, int]:
    """When each node was last given a task (created_ns; 0: never): one statement, an index probe per node
    (task_node_created)."""
    latest = GlobalTask.objects.filter(node=OuterRef("name")).order_by("-created_ns").values("created_ns")[:1]
    rows = Node.objects.filter(name__in=names).annotate(last=Subquery(latest)).values_list("name", "last")
    found = {name: int(last or 0) for name, last in rows}
    return {n: found.get(n, 0) for n in names}


def node_unfinished_tasks(*, node: str, limit: int = 20) -> list[tuple[str, str, str]]:
    """(task_id, task_type, task_status) of a node's unfinished tasks, oldest first, at most `limit`."""
    qs = GlobalTask.objects.filter(node=node, task_status__in=UNFINISHED).order_by("created_ns")
    return [(t, ty, st) for t, ty, st in qs.values_list("task_id", "task_type", "task_status")[:limit]]


def node_holdings(node: Node) -> list[str]:
    """What a node still holds that removing it would orphan: its storage units, vDAGs and block
    allocations, one line each ([] if none). node_removal's check and DELETE /api/v1/nodes/<n>/ share it."""
    from tasks_app.fleet.models import BlockAllocation, StorageUnit, Vdag

    held: list[str] = []
    volumes = sorted(set(StorageUnit.objects.filter(node=node).values_list("volume__name", flat=True)))
    if volumes:
        held.append(f"storage units of volume(s) {', '.join(volumes[:10])}; delete those volumes first")
    vdags = sorted(Vdag.objects.filter(node=node).values_list("name", flat=True)[:10])
    if vdags:
        held.append(f"vDAG(s) {', '.join(vdags)}; delete them first (vdag_deletion)")
    allocations = list(BlockAllocation.objects.filter(node=node).values_list("allocation_id", flat=True)[:10])
    if allocations:
        held.append(f"block allocation(s) ({', '.join(allocations)}); free them first (block_free)")
    return held
