"""Create-time checks that need the database (the handlers' own validate() cannot see it), and the
enrichment a node needs because it cannot read the database either (a volume's storage units)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks_app.errors import InvalidInput
from tasks_app.models import BlockAllocation, Cluster, GlobalTask, Node, StorageUnit, Vdag, Volume
from tasks_app.status import TERMINAL

Data = dict[str, Any]


def check(task_type: str, data: Data) -> Data:
    fn = _CHECKS.get(task_type)
    return fn(data) if fn else data


def cluster(name: str) -> Cluster:
    found = Cluster.objects.filter(name=name).exclude(state=Cluster.State.REMOVED).first()
    if found is None:
        raise InvalidInput(f"task_data.cluster: no cluster named {name!r}")
    return found


def member(name: str, cluster_obj: Cluster, field: str = "task_data.node") -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise InvalidInput(f"{field}: no node named {name!r}")
    if node.cluster_id != cluster_obj.pk or node.state != Node.State.MEMBER:
        raise InvalidInput(f"{field}: node {name!r} is not a member of cluster {cluster_obj.name!r}")
    return node


def volume_in_flight(cluster_name: str, volume: str) -> bool:
    return (
        GlobalTask.objects.filter(task_type="volume_create", task_data__cluster=cluster_name, task_data__name=volume)
        .exclude(task_status__in=TERMINAL)
        .exists()
    )


def _volume_create(data: Data) -> Data:
    c = cluster(data["cluster"])
    for i, unit in enumerate(data["storage_units"]):
        member(unit["node"], c, f"task_data.storage_units[{i}].node")
    if Volume.objects.filter(cluster=c, name=data["name"]).exists():
        raise InvalidInput(f"task_data.name: volume {data['name']!r} already exists in cluster {c.name!r}")
    if volume_in_flight(c.name, data["name"]):
        raise InvalidInput(f"task_data.name: volume {data['name']!r} is already being created in cluster {c.name!r}")
    return data


def _existing_volume(states_allowed: tuple[str, ...], verb: str, hint: str = "") -> Callable[[Data], Data]:
    def check_volume(data: Data) -> Data:
        c = cluster(data["cluster"])
        vol = Volume.objects.filter(cluster=c, name=data["name"]).first()
        if vol is None:
            raise InvalidInput(f"task_data.name: no volume {data['name']!r} in cluster {c.name!r}")
        if vol.state not in states_allowed:
            raise InvalidInput(f"task_data.name: volume {vol.name!r} is {vol.state}; cannot {verb} it{hint}")
        units = StorageUnit.objects.filter(volume=vol).select_related("node").order_by("index")
        # The nodes cannot read the database, so the task carries where the units are.
        return {
            **data,
            "type": vol.type,
            "storage_units": [{"node": u.node.name, "path": u.path, "index": u.index} for u in units],
        }

    return check_volume


def _node_task(data: Data) -> Data:
    member(data["node"], cluster(data["cluster"]))
    return data


def _node_addition(data: Data) -> Data:
    cluster(data["cluster"])
    node = Node.objects.filter(name=data["node"]).first()
    if node is not None and node.state == Node.State.MEMBER:
        raise InvalidInput(f"task_data.node: node {node.name!r} is already a member of cluster {node.cluster.name!r}")
    return data


def _node_removal(data: Data) -> Data:
    node = member(data["node"], cluster(data["cluster"]))
    if StorageUnit.objects.filter(node=node).exists():
        raise InvalidInput(f"task_data.node: node {node.name!r} still holds storage units; delete those volumes first")
    return data


def _cluster_creation(data: Data) -> Data:
    existing = Cluster.objects.filter(name=data["cluster"]).first()
    if existing is not None and existing.state == Cluster.State.READY and existing.nodes.exists():
        raise InvalidInput(f"task_data.cluster: cluster {existing.name!r} already exists")
    return data


def _cluster_remove(data: Data) -> Data:
    c = cluster(data["cluster"])
    if c.volumes.exists():
        raise InvalidInput(f"task_data.cluster: cluster {c.name!r} still has volumes")
    return data


def _vdag(data: Data) -> Data:
    c = cluster(data["cluster"])
    node = member(data["node"], c)
    in_flight = (
        GlobalTask.objects.filter(task_type="vdag_creation", task_data__cluster=c.name, task_data__name=data["name"])
        .exclude(task_status__in=TERMINAL)
        .exists()
    )
    if in_flight or Vdag.objects.filter(cluster=c, name=data["name"]).exists():
        raise InvalidInput(f"task_data.name: vDAG {data['name']!r} already exists in cluster {c.name!r}")
    held = set(
        BlockAllocation.objects.filter(node=node, allocation_id__in=[v["allocation"] for v in data["vertices"]])
        .values_list("allocation_id", flat=True)
    )
    for i, vertex in enumerate(data["vertices"]):
        if vertex["allocation"] not in held:
            raise InvalidInput(
                f"task_data.vertices[{i}].allocation: {vertex['allocation']!r} is not a block allocation "
                f"on node {node.name!r}"
            )
    return data


_CHECKS: dict[str, Callable[[Data], Data]] = {
    "volume_create": _volume_create,
    "volume_start": _existing_volume(("created", "stopped"), "start"),
    "volume_stop": _existing_volume(("started",), "stop"),
    "volume_delete": _existing_volume(("created", "stopped"), "delete", " (stop it first)"),
    "block_alloc": _node_task,
    "vdag_creation": _vdag,
    "node_addition": _node_addition,
    "node_removal": _node_removal,
    "cluster_infra_creation": _cluster_creation,
    "cluster_infra_remove": _cluster_remove,
}
