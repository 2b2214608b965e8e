"""The node family: node_addition and node_removal run on the node joining or leaving, which checks
its own state.

Server half: tasks_app/families/nodes.py (checks against the database, the Node record).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from workers.families import blocks
from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "node")
    return data


SCHEMA = schema.payload({"cluster": schema.NAME, "node": schema.NAME}, ["cluster", "node"])


def node_order(data: dict[str, Any]) -> str:
    return f"node:{data['node']}"


@register(
    "node_addition",
    validate=validate,
    participants=payload.one_node,
    order_key=node_order,
    schema=SCHEMA,
    order_key_doc="node:<node>",
)
def add(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Prepares the node's data directory and records which cluster it joined."""
    ctx.check_cancelled("before joining")
    for sub in ("volumes", "clusters", "vdags"):
        (ctx.data_dir / sub).mkdir(parents=True, exist_ok=True)
    info = {"cluster": data["cluster"], "node": ctx.node, "joined_at": int(time.time()), "task_id": ctx.task_id}
    (ctx.data_dir / "membership.json").write_text(json.dumps(info))
    free = shutil.disk_usage(ctx.data_dir).free
    return {"data_dir": str(ctx.data_dir), "capacity_blocks": blocks.capacity_blocks(), "free_bytes": free}


@register(
    "node_removal",
    validate=validate,
    participants=payload.one_node,
    order_key=node_order,
    schema=SCHEMA,
    order_key_doc="node:<node>",
)
def remove(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Refuses while the node still holds storage units or blocks; otherwise leaves the cluster."""
    ctx.check_cancelled("before leaving")
    volumes = ctx.data_dir / "volumes"
    held = sorted(p.name for p in volumes.iterdir()) if volumes.exists() else []
    if held:
        raise HandlerError(f"node {ctx.node} still holds storage units of: {', '.join(held)}")
    allocations = blocks.allocated(ctx.data_dir)
    if allocations:
        raise HandlerError(
            f"node {ctx.node} still has {len(allocations)} block allocation(s); free them with block_free"
        )
    (ctx.data_dir / "membership.json").unlink(missing_ok=True)
    return {"node": ctx.node, "left": data["cluster"]}
