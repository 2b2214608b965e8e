"""The block family's server half (node half: workers/families/blocks.py): a member node and a free
allocation id at create; the BlockAllocation record, written when blocks are allocated and deleted
when they are freed."""

from __future__ import annotations

from tasks_app.errors import InvalidInput
from tasks_app.families.common import cluster, in_flight, member
from tasks_app.families.registry import Data, register
from tasks_app.fleet.models import BlockAllocation, Node, Vdag


def check_alloc(task_id: str, data: Data) -> Data:
    member(data["node"], cluster(data["cluster"]))
    held = BlockAllocation.objects.filter(allocation_id=task_id).select_related("node").first()
    if held is not None:
        # The allocation's id is the task id: an earlier task under this id still holds its blocks.
        raise InvalidInput(
            f"task_id: {task_id!r} names a block allocation that still holds {held.blocks} block(s) on node "
            f"{held.node.name!r}; free it with block_free, or choose another task_id"
        )
    return data


def vdags_using(node: Node, allocation: str) -> list[str]:
    return sorted(
        vdag.name
        for vdag in Vdag.objects.filter(node=node).only("name", "graph")
        if any(v.get("allocation") == allocation for v in (vdag.graph or {}).get("vertices", []))
    )


def check_free(task_id: str, data: Data) -> Data:
    node = member(data["node"], cluster(data["cluster"]))
    allocation = data["allocation"]
    if not BlockAllocation.objects.filter(allocation_id=allocation, node=node).exists():
        raise InvalidInput(f"task_data.allocation: no block allocation {allocation!r} on node {node.name!r}")
    users = vdags_using(node, allocation)
    if users:
        raise InvalidInput(
            f"task_data.allocation: {allocation!r} backs vDAG(s) {', '.join(users)}; delete them first (vdag_deletion)"
        )
    if in_flight("block_free", allocation=allocation):
        raise InvalidInput(f"task_data.allocation: {allocation!r} is already being freed")
    return data


def record_allocated(task_id: str, data: Data, result: Data) -> None:
    BlockAllocation.objects.create(
        allocation_id=str(result.get("allocation_id") or task_id),
        node=Node.objects.get(name=data["node"]),
        blocks=int(data["blocks"]),
    )


def record_freed(task_id: str, data: Data, result: Data) -> None:
    BlockAllocation.objects.filter(allocation_id=data["allocation"]).delete()


register("block_alloc", check=check_alloc, on_complete=record_allocated)
register("block_free", check=check_free, on_complete=record_freed)
