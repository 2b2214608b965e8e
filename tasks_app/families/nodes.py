"""The node family's server half (node half: workers/families/nodes.py): a registered node joins, a
member that holds nothing leaves; the Node record follows."""

from __future__ import annotations

from tasks_app.errors import InvalidInput
from tasks_app.families.common import cluster, member
from tasks_app.families.registry import Data, register
from tasks_app.fleet.models import Node
from tasks_app.fleet.selectors import node_holdings


def check_addition(task_id: str, data: Data) -> Data:
    cluster(data["cluster"])
    node = Node.objects.filter(name=data["node"]).select_related("cluster").first()
    if node is None:
        raise InvalidInput(
            f"task_data.node: no node named {data['node']!r} is registered; register it first "
            '(POST /api/v1/nodes/ with "state": "joining") and start its worker'
        )
    if node.state == Node.State.MEMBER:
        raise InvalidInput(f"task_data.node: node {node.name!r} is already a member of cluster {node.cluster.name!r}")
    return data


def check_removal(task_id: str, data: Data) -> Data:
    node = member(data["node"], cluster(data["cluster"]))
    held = node_holdings(node)  # what DELETE /api/v1/nodes/<n>/ refuses for too
    if held:
        raise InvalidInput(f"task_data.node: node {node.name!r} still holds {held[0]}")
    return data


def record_added(task_id: str, data: Data, result: Data) -> None:
    Node.objects.filter(name=data["node"]).update(
        cluster=cluster(data["cluster"]),
        state=Node.State.MEMBER,
        data_dir=str(result.get("data_dir", "")),
        capacity_blocks=int(result.get("capacity_blocks", 0)),
    )


def record_removed(task_id: str, data: Data, result: Data) -> None:
    Node.objects.filter(name=data["node"]).update(state=Node.State.REMOVED)


register("node_addition", check=check_addition, on_complete=record_added)
register("node_removal", check=check_removal, on_complete=record_removed)
