"""The vDAG family's server half (node half: workers/families/vdags.py): a free name and allocations
held on the node at create; the Vdag record, written on creation and deleted on deletion."""

from __future__ import annotations

from tasks_app.errors import InvalidInput
from tasks_app.families.common import cluster, in_flight, member
from tasks_app.families.registry import Data, register
from tasks_app.fleet.models import BlockAllocation, Cluster, Node, Vdag


def check_creation(task_id: str, data: Data) -> Data:
    c = cluster(data["cluster"])
    node = member(data["node"], c)
    if in_flight("vdag_creation", cluster=c.name, name=data["name"]) or (
        Vdag.objects.filter(cluster=c, name=data["name"]).exists()
    ):
        raise InvalidInput(f"task_data.name: vDAG {data['name']!r} already exists in cluster {c.name!r}")
    held = set(
        BlockAllocation.objects.filter(
            node=node, allocation_id__in=[v["allocation"] for v in data["vertices"]]
        ).values_list("allocation_id", flat=True)
    )
    for i, vertex in enumerate(data["vertices"]):
        if vertex["allocation"] not in held:
            raise InvalidInput(
                f"task_data.vertices[{i}].allocation: {vertex['allocation']!r} is not a block allocation "
                f"on node {node.name!r}"
            )
    return data


def check_deletion(task_id: str, data: Data) -> Data:
    c = cluster(data["cluster"])
    vdag = Vdag.objects.filter(cluster=c, name=data["name"]).select_related("node").first()
    if vdag is None:
        raise InvalidInput(f"task_data.name: no vDAG {data['name']!r} in cluster {c.name!r}")
    if data.get("node", vdag.node.name) != vdag.node.name:
        raise InvalidInput(f"task_data.node: vDAG {vdag.name!r} is on node {vdag.node.name!r}")
    if in_flight("vdag_deletion", cluster=c.name, name=data["name"]):
        raise InvalidInput(f"task_data.name: vDAG {data['name']!r} is already being deleted")
    return {**data, "node": vdag.node.name}


def record_created(task_id: str, data: Data, result: Data) -> None:
    Vdag.objects.create(
        name=data["name"],
        cluster=Cluster.objects.get(name=data["cluster"]),
        node=Node.objects.get(name=data["node"]),
        graph={"vertices": data["vertices"], "edges": data.get("edges", [])},
    )


def record_deleted(task_id: str, data: Data, result: Data) -> None:
    Vdag.objects.filter(cluster__name=data["cluster"], name=data["name"]).delete()


register("vdag_creation", check=check_creation, on_complete=record_created)
register("vdag_deletion", check=check_deletion, on_complete=record_deleted)
