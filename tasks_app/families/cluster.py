"""The cluster-infra family's server half (node half: workers/families/cluster.py): the Cluster record."""

from __future__ import annotations

from tasks_app.errors import InvalidInput
from tasks_app.families.common import cluster
from tasks_app.families.registry import Data, Hook, register
from tasks_app.fleet.models import Cluster, Node


def check_creation(task_id: str, data: Data) -> Data:
    existing = Cluster.objects.filter(name=data["cluster"]).first()
    if existing is not None and existing.state == Cluster.State.READY and existing.nodes.exists():
        raise InvalidInput(f"task_data.cluster: cluster {existing.name!r} already exists")
    return data


def check_remove(task_id: str, data: Data) -> Data:
    c = cluster(data["cluster"])
    if c.volumes.exists():
        raise InvalidInput(f"task_data.cluster: cluster {c.name!r} still has volumes")
    return data


def record_state(state: str) -> Hook:
    def hook(task_id: str, data: Data, result: Data) -> None:
        found, _ = Cluster.objects.update_or_create(name=data["cluster"], defaults={"state": state})
        if state == Cluster.State.REMOVED:
            # A removed cluster has no members; its nodes may join another one.
            found.nodes.update(state=Node.State.REMOVED)

    return hook


register("cluster_infra_creation", check=check_creation, on_complete=record_state(Cluster.State.READY))
register("cluster_infra_remove", check=check_remove, on_complete=record_state(Cluster.State.REMOVED))
