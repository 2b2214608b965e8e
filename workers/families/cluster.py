"""The cluster-infra family: cluster_infra_creation and cluster_infra_remove lay out (or remove) the
cluster's directory on each of its nodes, fanning out from the first.

Server half: tasks_app/families/cluster.py (checks against the database, the Cluster record).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name_list(data, "nodes")
    return data


SCHEMA = schema.payload({"cluster": schema.NAME, "nodes": schema.name_list()}, ["cluster", "nodes"])


def participants(data: dict[str, Any]) -> list[str]:
    return list(data["nodes"])


def cluster_order(data: dict[str, Any]) -> str:
    return f"cluster:{data['cluster']}"


def create_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    path = ctx.data_dir / "clusters" / share["cluster"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "cluster.json").write_text(json.dumps({"cluster": share["cluster"], "task_id": ctx.task_id}))
    return {"path": str(path)}


def remove_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    path = ctx.data_dir / "clusters" / share["cluster"]
    if path.exists():
        shutil.rmtree(path)
    return {"removed": str(path)}


@register(
    "cluster_infra_creation",
    validate=validate,
    participants=participants,
    part=create_part,
    # A creation that fails for good, or is cancelled, leaves no cluster directory behind.
    compensate=remove_part,
    order_key=cluster_order,
    schema=SCHEMA,
    order_key_doc="cluster:<cluster>",
)
def create(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Lays out the cluster's directory on every listed node."""
    answers = ctx.fan_out({node: {"cluster": data["cluster"]} for node in data["nodes"]})
    return {"cluster": data["cluster"], "nodes": answers}


@register(
    "cluster_infra_remove",
    validate=validate,
    participants=participants,
    part=remove_part,
    order_key=cluster_order,
    schema=SCHEMA,
    order_key_doc="cluster:<cluster>",
)
def remove(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Removes the cluster's directory from every listed node."""
    answers = ctx.fan_out({node: {"cluster": data["cluster"]} for node in data["nodes"]})
    return {"cluster": data["cluster"], "nodes": answers}
