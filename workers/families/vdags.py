"""The vDAG family: vdag_creation stores a DAG of vertices, each backed by a block allocation on the
node; vdag_deletion removes it (after which its allocations can be freed).

Server half: tasks_app/families/vdags.py (checks against the database, the Vdag record).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from workers.families import blocks
from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError, PayloadError
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "node")
    payload.name(data, "name")
    vertices = data.get("vertices")
    if not isinstance(vertices, list) or not vertices:
        raise PayloadError("vertices", 'must be a non-empty list of {"id": ..., "allocation": ...}')
    ids: list[str] = []
    for i, vertex in enumerate(vertices):
        if not isinstance(vertex, dict) or not isinstance(vertex.get("id"), str) or not vertex["id"]:
            raise PayloadError(f"vertices[{i}].id", "is required and must be a string")
        if not isinstance(vertex.get("allocation"), str):
            raise PayloadError(f"vertices[{i}].allocation", "must be the allocation_id of a block_alloc task")
        ids.append(vertex["id"])
    if len(set(ids)) != len(ids):
        raise PayloadError("vertices", "vertex ids must be unique")
    edges = data.get("edges", [])
    if not isinstance(edges, list):
        raise PayloadError("edges", "must be a list of [from, to] pairs")
    for i, edge in enumerate(edges):
        if not (isinstance(edge, list) and len(edge) == 2 and all(v in ids for v in edge)):
            raise PayloadError(f"edges[{i}]", "must be a [from, to] pair of vertex ids")
    cycle = find_cycle(ids, [tuple(e) for e in edges])
    if cycle:
        raise PayloadError("edges", f"the graph has a cycle through {', '.join(cycle)}")
    return data


def find_cycle(ids: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm: the vertices left over once every source is peeled off lie on a cycle."""
    indegree = dict.fromkeys(ids, 0)
    out: dict[str, list[str]] = {v: [] for v in ids}
    for src, dst in edges:
        out[src].append(dst)
        indegree[dst] += 1
    queue = deque(v for v in ids if indegree[v] == 0)
    seen = 0
    while queue:
        v = queue.popleft()
        seen += 1
        for w in out[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                queue.append(w)
    return [v for v in ids if indegree[v] > 0] if seen < len(ids) else []


def validate_deletion(data: dict[str, Any]) -> dict[str, Any]:
    """`node` may be left out: the server knows where the vDAG is (tasks_app/families/vdags.py)."""
    payload.name(data, "cluster")
    payload.name(data, "name")
    if data.get("node") is not None:
        payload.name(data, "node")
    return data


# What a schema cannot say, validate() still checks: vertex ids unique, edges between listed vertices, no cycle.
VERTEX: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "allocation": {"type": "string", "description": "the allocation_id of a block_alloc task"},
    },
    "required": ["id", "allocation"],
}
EDGE: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 2,
    "maxItems": 2,
    "description": "[from, to]: two vertex ids",
}
CREATION_SCHEMA = schema.payload(
    {
        "cluster": schema.NAME,
        "node": schema.NAME,
        "name": schema.NAME,
        "vertices": {"type": "array", "items": VERTEX, "minItems": 1, "description": "unique ids"},
        "edges": {"type": "array", "items": EDGE, "description": "acyclic; none by default"},
    },
    ["cluster", "node", "name", "vertices"],
)
DELETION_SCHEMA = schema.payload(
    {
        "cluster": schema.NAME,
        "name": schema.NAME,
        "node": {**schema.nullable(schema.NAME), "description": "by default, the vDAG's"},
    },
    ["cluster", "name"],
)


def vdag_order(data: dict[str, Any]) -> str:
    return f"vdag:{data['cluster']}:{data['name']}"


@register(
    "vdag_creation",
    validate=validate,
    participants=payload.one_node,
    order_key=vdag_order,
    schema=CREATION_SCHEMA,
    order_key_doc="vdag:<cluster>:<name>",
)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Checks every vertex's blocks are allocated on this node, then stores the graph there."""
    ctx.check_cancelled("before checking the allocations")
    held = blocks.allocated(ctx.data_dir)
    for vertex in data["vertices"]:
        if vertex["allocation"] not in held:
            raise HandlerError(
                f"vertex {vertex['id']} refers to allocation {vertex['allocation']}, "
                f"which is not allocated on node {ctx.node}"
            )
    target = ctx.data_dir / "vdags"
    target.mkdir(exist_ok=True)
    graph = {"name": data["name"], "vertices": data["vertices"], "edges": data.get("edges", []), "task": ctx.task_id}
    (target / f"{data['name']}.json").write_text(json.dumps(graph, indent=1))
    return {"vdag": data["name"], "vertices": len(data["vertices"]), "path": str(target / f"{data['name']}.json")}


@register(
    "vdag_deletion",
    validate=validate_deletion,
    participants=payload.one_node,
    order_key=vdag_order,
    schema=DELETION_SCHEMA,
    order_key_doc="vdag:<cluster>:<name>",
)
def delete(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Removes the stored graph from the node. Removing one that is already gone is fine."""
    ctx.check_cancelled("before removing the graph")
    path = ctx.data_dir / "vdags" / f"{data['name']}.json"
    existed = path.exists()
    path.unlink(missing_ok=True)
    return {"vdag": data["name"], "removed": existed}
