"""Writes to the cluster records outside completion hooks: registration and heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from django.db import transaction

from tasks_app.models import Cluster, GlobalTask, Node
from tasks_app.update_stream import Heartbeat


def cluster_ensure(*, name: str) -> Cluster:
    cluster, _ = Cluster.objects.get_or_create(name=name, defaults={"state": Cluster.State.READY})
    return cluster


def node_register(
    *, cluster: Cluster, name: str, data_dir: str = "", capacity_blocks: int = 0, transport: str = Node.Transport.QUEUE
) -> Node:
    """Make a node a member of a cluster directly (the demo set-up; node_addition is the task way)."""
    node, _ = Node.objects.update_or_create(
        name=name,
        defaults={
            "cluster": cluster,
            "state": Node.State.MEMBER,
            "data_dir": data_dir,
            "capacity_blocks": capacity_blocks,
            "transport": transport,
        },
    )
    return node


def record_heartbeats(beats: Sequence[Heartbeat]) -> None:
    """Keep each node's newest heartbeat. Beats from nodes we do not know are ignored."""
    newest: dict[str, Heartbeat] = {}
    for beat in beats:
        if beat.node not in newest or beat.at > newest[beat.node].at:
            newest[beat.node] = beat
    for name, beat in newest.items():
        # A heartbeat brings an offline node back.
        fields: dict[str, object] = {"last_heartbeat": datetime.fromtimestamp(beat.at, UTC), "offline_since": None}
        if isinstance(beat.info.get("capacity_blocks"), int):
            fields["capacity_blocks"] = beat.info["capacity_blocks"]
        if isinstance(beat.info.get("data_dir"), str):
            fields["data_dir"] = beat.info["data_dir"]
        Node.objects.filter(name=name).update(**fields)


def node_pull_tasks(*, node: Node, since: int | None = None) -> list[GlobalTask]:
    """Kadalu's pull: the node's unfinished tasks, oldest first; the pending ones become received as
    they are fetched (the rows returned show that)."""
    from tasks_app.cluster_selectors import node_open_tasks
    from tasks_app.transitions import StatusUpdate, task_transition_many

    with transaction.atomic():
        ids = list(node_open_tasks(node=node, since=since).values_list("task_id", flat=True)[:500])
        task_transition_many(
            updates=[StatusUpdate(task_id=i, status="received", source=f"pull:{node.name}") for i in ids]
        )
    return list(GlobalTask.objects.filter(pk__in=ids).order_by("task_create_timestamp", "task_id"))
