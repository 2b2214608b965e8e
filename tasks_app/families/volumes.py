"""The volume family's server half (node half: workers/families/volumes.py): a volume name free in its
cluster and member nodes at create; the Volume and StorageUnit records when the work completes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks_app.errors import InvalidInput
from tasks_app.families.common import cluster, in_flight, member
from tasks_app.families.registry import Data, Hook, register
from tasks_app.fleet.models import Cluster, Node, StorageUnit, Volume


def check_create(task_id: str, data: Data) -> Data:
    c = cluster(data["cluster"])
    for i, unit in enumerate(data["storage_units"]):
        member(unit["node"], c, f"task_data.storage_units[{i}].node")
    if Volume.objects.filter(cluster=c, name=data["name"]).exists():
        raise InvalidInput(f"task_data.name: volume {data['name']!r} already exists in cluster {c.name!r}")
    if in_flight("volume_create", cluster=c.name, name=data["name"]):
        raise InvalidInput(f"task_data.name: volume {data['name']!r} is already being created in cluster {c.name!r}")
    return data


def check_existing(states_allowed: tuple[str, ...], verb: str, hint: str = "") -> Callable[[str, Data], Data]:
    def check_volume(task_id: str, data: Data) -> Data:
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


def record_created(task_id: str, data: Data, result: Data) -> None:
    volume = Volume.objects.create(
        name=data["name"],
        cluster=Cluster.objects.get(name=data["cluster"]),
        type=data.get("type", "replicate"),
        task_id=task_id,
    )
    units: list[dict[str, Any]] = result.get("storage_units") or []
    nodes = {n.name: n for n in Node.objects.filter(name__in=[u["node"] for u in units])}
    StorageUnit.objects.bulk_create(
        [StorageUnit(volume=volume, node=nodes[u["node"]], path=u["path"], index=u["index"]) for u in units]
    )


def record_state(state: str) -> Hook:
    def hook(task_id: str, data: Data, result: Data) -> None:
        Volume.objects.filter(cluster__name=data["cluster"], name=data["name"]).update(state=state)

    return hook


def record_deleted(task_id: str, data: Data, result: Data) -> None:
    Volume.objects.filter(cluster__name=data["cluster"], name=data["name"]).delete()


register("volume_create", check=check_create, on_complete=record_created)
register(
    "volume_start",
    check=check_existing(("created", "stopped"), "start"),
    on_complete=record_state(Volume.State.STARTED),
)
register("volume_stop", check=check_existing(("started",), "stop"), on_complete=record_state(Volume.State.STOPPED))
register(
    "volume_delete",
    check=check_existing(("created", "stopped"), "delete", " (stop it first)"),
    on_complete=record_deleted,
)
