"""cluster_infra_creation / cluster_infra_remove: the cluster's directory on each of its nodes."""

from __future__ import annotations

import json
import shutil
from typing import Any

from workers.context import RunContext
from workers.handlers import payload
from workers.registry import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name_list(data, "nodes")
    return data


def participants(data: dict[str, Any]) -> list[str]:
    return list(data["nodes"])


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


@register("cluster_infra_creation", validate=validate, participants=participants, part=create_part)
def create(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Lays out the cluster's directory on every listed node."""
    answers = ctx.fan_out({node: {"cluster": data["cluster"]} for node in data["nodes"]})
    return {"cluster": data["cluster"], "nodes": answers}


@register("cluster_infra_remove", validate=validate, participants=participants, part=remove_part)
def remove(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Removes the cluster's directory from every listed node."""
    answers = ctx.fan_out({node: {"cluster": data["cluster"]} for node in data["nodes"]})
    return {"cluster": data["cluster"], "nodes": answers}
