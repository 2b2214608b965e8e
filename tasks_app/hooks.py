"""Completion hooks: when a task becomes completed, the record its work created is written, in the
same transaction as the status change (Kadalu: "creates a record in respective table").
A failed task writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks_app.models import BlockAllocation, Cluster, Node, StorageUnit, Vdag, Volume

Hook = Callable[[str, dict[str, Any], dict[str, Any]], None]  # (task_id, task_data, result)


def has_completion_hook(task_type: str) -> bool:
    return task_type in _HOOKS


def run_completion_hook(task_type: str, task_id: str, task_data: dict[str, Any], result: dict[str, Any]) -> None:
    hook = _HOOKS.get(task_type)
    if hook is not None:
        hook(task_id, task_data, result)


def _cluster(name: str) -> Cluster:
    return Cluster.objects.get(name=name)


def _volume_create(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    volume = Volume.objects.create(
        name=data["name"], cluster=_cluster(data["cluster"]), type=data.get("type", "replicate"), task_id=task_id
    )
    units = result.get("storage_units") or []
    nodes = {n.name: n for n in Node.objects.filter(name__in=[u["node"] for u in units])}
    StorageUnit.objects.bulk_create(
        [StorageUnit(volume=volume, node=nodes[u["node"]], path=u["path"], index=u["index"]) for u in units]
    )


def _volume_state(state: str) -> Hook:
    def hook(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
        Volume.objects.filter(cluster__name=data["cluster"], name=data["name"]).update(state=state)

    return hook


def _volume_delete(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    Volume.objects.filter(cluster__name=data["cluster"], name=data["name"]).delete()


def _node_addition(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    Node.objects.update_or_create(
        name=data["node"],
        defaults={
            "cluster": _cluster(data["cluster"]),
            "state": Node.State.MEMBER,
            "data_dir": result.get("data_dir", ""),
            "capacity_blocks": int(result.get("capacity_blocks", 0)),
        },
    )


def _node_removal(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    Node.objects.filter(name=data["node"]).update(state=Node.State.REMOVED)


def _cluster_state(state: str) -> Hook:
    def hook(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
        cluster, _ = Cluster.objects.update_or_create(name=data["cluster"], defaults={"state": state})
        if state == Cluster.State.REMOVED:
            # A removed cluster has no members; its nodes may join another one.
            cluster.nodes.update(state=Node.State.REMOVED)

    return hook


def _block_alloc(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    BlockAllocation.objects.create(
        allocation_id=task_id, node=Node.objects.get(name=data["node"]), blocks=int(data["blocks"])
    )


def _vdag(task_id: str, data: dict[str, Any], result: dict[str, Any]) -> None:
    Vdag.objects.create(
        name=data["name"],
        cluster=_cluster(data["cluster"]),
        node=Node.objects.get(name=data["node"]),
        graph={"vertices": data["vertices"], "edges": data.get("edges", [])},
    )


_HOOKS: dict[str, Hook] = {
    "volume_create": _volume_create,
    "volume_start": _volume_state(Volume.State.STARTED),
    "volume_stop": _volume_state(Volume.State.STOPPED),
    "volume_delete": _volume_delete,
    "node_addition": _node_addition,
    "node_removal": _node_removal,
    "cluster_infra_creation": _cluster_state(Cluster.State.READY),
    "cluster_infra_remove": _cluster_state(Cluster.State.REMOVED),
    "block_alloc": _block_alloc,
    "vdag_creation": _vdag,
}


def register_hook(task_type: str, hook: Hook) -> None:
    """For task types added outside this package."""
    _HOOKS[task_type] = hook
