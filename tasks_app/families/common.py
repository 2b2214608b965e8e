"""Lookups the families' create-time checks share. Each raises InvalidInput naming the field."""

from __future__ import annotations

from tasks_app.errors import InvalidInput
from tasks_app.fleet.models import Cluster, Node
from tasks_app.tasks.models import GlobalTask
from workers.protocol.status import UNFINISHED


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


def in_flight(task_type: str, **data_fields: str) -> bool:
    """Whether an unfinished task of this type has these task_data fields."""
    lookups = {f"task_data__{key}": value for key, value in data_fields.items()}
    executed = GlobalTask.objects.filter(task_type=task_type, **lookups).exclude(node="")  # tracked records never count
    # IN (the unfinished statuses), not NOT IN (the final ones): only the former can use an index.
    return executed.filter(task_status__in=UNFINISHED).exists()
