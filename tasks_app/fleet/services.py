"""Writes to the cluster records outside completion hooks: registration and heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction

from tasks_app.errors import AlreadyExists, NodeBusy
from tasks_app.fleet.models import Cluster, Node
from tasks_app.tasks.models import GlobalTask
from workers.protocol.messages import Heartbeat, Origin, StatusUpdate
from workers.protocol.status import UNFINISHED


def cluster_ensure(*, name: str) -> Cluster:
    cluster, _ = Cluster.objects.get_or_create(name=name, defaults={"state": Cluster.State.READY})
    return cluster


def cluster_create(*, name: str) -> Cluster:
    """POST /api/v1/clusters/: a new cluster; AlreadyExists (409) if the name is taken."""
    cluster, created = Cluster.objects.get_or_create(name=name, defaults={"state": Cluster.State.READY})
    if not created:
        raise AlreadyExists(f"Cluster {name!r} already exists")
    return cluster


def node_create(
    *,
    cluster: Cluster,
    name: str,
    transport: str,
    state: str,
    labels: dict[str, str] | None = None,
    capacity: dict[str, int] | None = None,
) -> Node:
    """POST /api/v1/nodes/: register a new node; AlreadyExists (409) if the name is taken, rather than
    re-registering it over its state, data dir and capacity (node_register, for the demo set-up, does)."""
    try:
        with transaction.atomic():
            return Node.objects.create(
                cluster=cluster, name=name, transport=transport, state=state,
                labels=labels or {}, capacity=capacity or {},
            )  # fmt: skip
    except IntegrityError as exc:  # node names are unique across clusters
        raise AlreadyExists(f"Node {name!r} already exists") from exc


def node_update(
    *,
    node: Node,
    labels: dict[str, str] | None = None,
    capacity: dict[str, int] | None = None,
    transport: str | None = None,
) -> Node:
    """PATCH /api/v1/nodes/<n>/: replace its labels or its capacity (each given one whole), or its
    transport. Capacity below what its unfinished tasks reserve is allowed (a disk shrank): placement
    gives it nothing that needs that resource until enough of them end."""
    fields: dict[str, object] = {}
    if labels is not None:
        fields["labels"] = labels
    if capacity is not None:
        fields["capacity"] = capacity
    if transport is not None:
        fields["transport"] = transport
    if fields:
        Node.objects.filter(pk=node.pk).update(**fields)
        for key, value in fields.items():
            setattr(node, key, value)
    return node


def node_busy(node: Node) -> NodeBusy | None:
    """Why removing this node is refused (None: it may go): its unfinished tasks, and the records that
    name it (storage units, vDAGs, block allocations: what node_removal refuses for too)."""
    from tasks_app.fleet.selectors import node_holdings, node_unfinished_tasks

    unfinished = node_unfinished_tasks(node=node.name)
    held = node_holdings(node)
    if not unfinished and not held:
        return None
    return NodeBusy(node.name, [f"task {t} ({ty}, {st})" for t, ty, st in unfinished], held)


def node_delete(*, node: Node) -> None:
    """DELETE /api/v1/nodes/<n>/: forget a node, its account and its token. Refused (NodeBusy, a 409 with
    the list) while it has unfinished tasks, or holds records that name it (storage units, vDAGs, block
    allocations: what node_removal refuses for too). Its finished tasks keep its name."""
    with transaction.atomic():
        locked = Node.objects.select_for_update().filter(pk=node.pk).first()
        if locked is None:
            return
        busy = node_busy(locked)
        if busy is not None:
            raise busy
        user = locked.user
        locked.delete()
        if user is not None:
            user.delete()  # its tokens go with it


def node_register(
    *,
    cluster: Cluster,
    name: str,
    data_dir: str = "",
    capacity_blocks: int = 0,
    transport: str = Node.Transport.QUEUE,
    state: str = Node.State.MEMBER,
    labels: dict[str, str] | None = None,
    capacity: dict[str, int] | None = None,
) -> Node:
    """Register a node: a member of the cluster at once (the demo set-up), or `joining`, for a
    node_addition task to make it one after the node has prepared itself. `labels` and `capacity` are
    its first ones: registering it again keeps what an operator has set since."""
    defaults = {
        "cluster": cluster,
        "state": state,
        "data_dir": data_dir,
        "capacity_blocks": capacity_blocks,
        "transport": transport,
    }
    node, _ = Node.objects.update_or_create(
        name=name,
        defaults=defaults,
        create_defaults={**defaults, "labels": labels or {}, "capacity": capacity or {}},
    )
    return node


def record_heartbeats(beats: Sequence[Heartbeat]) -> None:
    """Keep each node's newest heartbeat. Beats from nodes we do not know are ignored."""
    newest: dict[str, Heartbeat] = {}
    for beat in beats:
        if beat.node not in newest or beat.at > newest[beat.node].at:
            newest[beat.node] = beat
    # In name order, as placement locks node rows (placement.Placement.lock): never a lock-order cycle.
    for name, beat in sorted(newest.items()):
        # A heartbeat brings an offline node back.
        fields: dict[str, object] = {"last_heartbeat": datetime.fromtimestamp(beat.at, UTC), "offline_since": None}
        if isinstance(beat.info.get("capacity_blocks"), int):
            fields["capacity_blocks"] = beat.info["capacity_blocks"]
        if isinstance(beat.info.get("data_dir"), str):
            fields["data_dir"] = beat.info["data_dir"]
        fields.update(_runs_fields(beat))
        Node.objects.filter(name=name).update(**fields)


def _runs_fields(beat: Heartbeat) -> dict[str, object]:
    """What a heartbeat says of the node's runs (workers/node/running.py), for the stalled-run sweep.
    Every heartbeat replaces it: one that lists nothing (or nothing readable) clears it, so that no run
    is ever judged on an older list than the node's last word."""
    at = datetime.fromtimestamp(beat.at, UTC)
    runs = beat.info.get("runs")
    lists = runs if isinstance(runs, dict) else {}
    running, undelivered = lists.get("running"), lists.get("undelivered")
    no_outcome, listing_for = lists.get("no_outcome", []), lists.get("listing_for")
    if not (
        isinstance(running, list)
        and isinstance(undelivered, list)
        and isinstance(no_outcome, list)
        and all(isinstance(r, str) for r in [*running, *undelivered, *no_outcome])
        and isinstance(listing_for, int | float)
        and not isinstance(listing_for, bool)
    ):
        return {"running_runs": None, "runs_reported_at": at, "runs_listed_since": None}
    return {
        "running_runs": {
            "running": running,
            "undelivered": undelivered,
            "truncated": lists.get("truncated") is True,
            # Runs the stalled-run sweep asked about, that the node has no outcome for (workers/node/lifeline.py).
            "no_outcome": no_outcome,
        },
        "runs_reported_at": at,
        "runs_listed_since": at - timedelta(seconds=max(0.0, float(listing_for))),
    }


def node_pull_tasks(*, node: Node, since: int | None = None) -> list[GlobalTask]:
    """Kadalu's pull: the node's unfinished tasks, oldest first; the pending ones become received as
    they are fetched (the rows returned show that). A cancelling one tells the agent to stop it.
    Each row carries its run id, which the agent's reports name."""
    from tasks_app.fleet.selectors import node_open_tasks
    from tasks_app.tasks.transitions import task_transition_many

    with transaction.atomic():
        rows = list(node_open_tasks(node=node, since=since).values_list("task_id", "run_id")[:500])
        task_transition_many(
            updates=[
                StatusUpdate(
                    task_id=task_id, status="received", source=f"pull:{node.name}", run_id=run_id, origin=Origin.NODE
                )
                for task_id, run_id in rows
            ]
        )
        ids = [task_id for task_id, _ in rows]
        # Still this node's: a drain may have moved one between the read and its transition (then STALE).
        fetched = GlobalTask.objects.filter(pk__in=ids, node=node.name, task_status__in=UNFINISHED)
        return list(fetched.order_by("task_create_timestamp", "task_id"))
