"""The volume family, Kadalu's volume tasks. The initiator fans out to every node holding a storage unit.

A storage unit is a directory on its node with a small metadata file; the volume exists once
every unit does (volume_create), and its state is kept in each unit's metadata. One volume's
tasks share an ordering key, so they run one at a time, in order, on one node.

Server half: tasks_app/families/volumes.py (checks against the database, the Volume records).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError, PayloadError
from workers.protocol.specs import register

META = ".taskhub-unit.json"
# Top-level names in a node's data directory that belong to the agent or to other task types; a
# storage unit may not be placed at or inside one of them.
RESERVED = {".taskhub", "volumes", "clusters", "vdags", "blocks.json", ".blocks.lock", "membership.json"}
VOLUME_TYPES = {"replicate": (2, 3), "disperse": (3, 16), "distribute": (1, 64)}


def unit_path(data_dir: Path, volume: str, index: int, path: str | None) -> Path:
    """A unit's directory: data_dir/volumes/<volume>/unit<i>, or `path` relative to the data dir."""
    if path:
        return data_dir / path
    return data_dir / "volumes" / volume / f"unit{index}"


def check_unit_path(path: Any, field: str) -> str:
    if not isinstance(path, str):
        raise PayloadError(field, "must be a string")
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or not parts or ".." in parts or parts == (".",):
        raise PayloadError(field, "must be a relative path inside the node's data directory, without '..'")
    clean = [p for p in parts if p != "."]
    if not clean or clean[0] in RESERVED:
        raise PayloadError(field, f"may not be inside {clean[0] if clean else '.'!r}, which the node agent uses")
    return "/".join(clean)


def validate_create(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "name")
    vtype = data.get("type", "replicate")
    if not isinstance(vtype, str) or vtype not in VOLUME_TYPES:  # a list or an object is not hashable
        raise PayloadError("type", f"must be one of {', '.join(sorted(VOLUME_TYPES))}")
    units = data.get("storage_units")
    if not isinstance(units, list) or not units:
        raise PayloadError("storage_units", 'must be a non-empty list of {"node": ..., "path": ...}')
    low, high = VOLUME_TYPES[vtype]
    if not low <= len(units) <= high:
        raise PayloadError("storage_units", f"a {vtype} volume needs {low} to {high} storage units, got {len(units)}")
    clean: list[dict[str, Any]] = []
    for i, unit in enumerate(units):
        if not isinstance(unit, dict):
            raise PayloadError(f"storage_units[{i}]", 'must be an object like {"node": "node1"}')
        unknown = sorted(set(unit) - {"node", "path"})
        if unknown:
            raise PayloadError(f"storage_units[{i}]", f"unknown field(s) {', '.join(unknown)}; use node and path")
        node = payload.name({f"storage_units[{i}].node": unit.get("node")}, f"storage_units[{i}].node")
        entry: dict[str, Any] = {"node": node}
        if unit.get("path") is not None:
            entry["path"] = check_unit_path(unit["path"], f"storage_units[{i}].path")
        if any(c["node"] == node and c.get("path") == entry.get("path") and "path" in entry for c in clean):
            raise PayloadError(f"storage_units[{i}]", "repeats another unit's node and path")
        clean.append(entry)
    return {**data, "type": vtype, "storage_units": clean}


# check_unit_path as a pattern: relative, no '..' part, something besides '.', first part not RESERVED.
# (?![\s\S]) is the end of the string (Python's `$` also matches before a final newline).
_END = r"(?:/|(?![\s\S]))"
UNIT_PATH_PATTERN = (
    rf"^(?!/)(?![\s\S]*(?:^|/)\.\.{_END})(?:\./+)*"
    rf"(?!(?:\.|{'|'.join(sorted(map(re.escape, RESERVED)))}){_END})[^/]"
)
UNIT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "node": schema.NAME,
        "path": {
            **schema.nullable({"type": "string"}),
            "pattern": UNIT_PATH_PATTERN,
            "description": "relative to the node's data directory; by default volumes/<name>/unit<index>",
        },
    },
    "required": ["node"],
    "additionalProperties": False,
}


def _units_for(vtype: str, default: bool) -> dict[str, Any]:
    """The unit count a volume type needs; the default type also holds when `type` is left out."""
    low, high = VOLUME_TYPES[vtype]
    return {
        "properties": {"type": {"enum": [vtype]}, "storage_units": {"minItems": low, "maxItems": high}},
        **({} if default else {"required": ["type"]}),
    }


# validate_create but for two units with the same node and path (after cleaning), which validate() refuses.
CREATE_SCHEMA = schema.payload(
    {
        "cluster": schema.NAME,
        "name": schema.NAME,
        "type": {"type": "string", "enum": sorted(VOLUME_TYPES), "default": "replicate"},
        "storage_units": {
            "type": "array",
            "items": UNIT,
            "minItems": 1,
            "maxItems": max(high for _, high in VOLUME_TYPES.values()),
            "description": ", ".join(f"{t}: {low} to {high}" for t, (low, high) in VOLUME_TYPES.items()),
        },
    },
    ["cluster", "name", "storage_units"],
    anyOf=[_units_for(vtype, vtype == "replicate") for vtype in VOLUME_TYPES],
)
# The server fills in the volume's type and storage units (tasks_app/families/volumes.py).
EXISTING_SCHEMA = schema.payload({"cluster": schema.NAME, "name": schema.NAME}, ["cluster", "name"])


def validate_existing(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "name")
    return data


ORDER_KEY_DOC = "volume:<cluster>:<name>"


def volume_order(data: dict[str, Any]) -> str:
    return f"volume:{data['cluster']}:{data['name']}"


def participants(data: dict[str, Any]) -> list[str]:
    nodes: list[str] = []
    for unit in data.get("storage_units", []):
        if unit["node"] not in nodes:
            nodes.append(unit["node"])
    return nodes


def parts(data: dict[str, Any], **extra: Any) -> dict[str, dict[str, Any]]:
    """Each participant's share: the units it holds, by their index in the volume."""
    out: dict[str, dict[str, Any]] = {}
    for index, unit in enumerate(data["storage_units"]):
        share = out.setdefault(unit["node"], {"volume": data["name"], "type": data.get("type"), "units": [], **extra})
        share["units"].append({"index": unit.get("index", index), "path": unit.get("path")})
    return out


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((path / META).read_text()))
    except FileNotFoundError:
        return None


# --- volume_create ------------------------------------------------------------------------------


def create_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    made = []
    for unit in share["units"]:
        ctx.check_cancelled(f"before unit {unit['index']} on {ctx.node}")
        path = unit_path(ctx.data_dir, share["volume"], unit["index"], unit["path"])
        meta = read_meta(path)
        if meta is not None and meta.get("volume") != share["volume"]:
            raise HandlerError(f"{path} on node {ctx.node} already holds a unit of volume {meta.get('volume')!r}")
        if meta is None and path.exists() and any(path.iterdir()):
            raise HandlerError(f"{path} on node {ctx.node} exists and is not empty; choose another path")
        for parent in path.relative_to(ctx.data_dir).parents:
            if parent != Path(".") and read_meta(ctx.data_dir / parent) is not None:
                raise HandlerError(f"{path} on node {ctx.node} is inside another storage unit ({parent})")
        path.mkdir(parents=True, exist_ok=True)
        info = {"volume": share["volume"], "type": share["type"], "index": unit["index"], "task_id": ctx.task_id,
                "state": "created"}  # fmt: skip
        (path / META).write_text(json.dumps(info, indent=1))
        made.append({"index": unit["index"], "path": str(path)})
    return {"units": made}


@register(
    "volume_create",
    validate=validate_create,
    participants=participants,
    part=create_part,
    # Rollback: a volume that fails for good leaves no storage unit behind on the nodes that made one.
    compensate=lambda ctx, share: delete_part(ctx, share),  # defined below
    reassignable=True,
    order_key=volume_order,
    schema=CREATE_SCHEMA,
    order_key_doc=ORDER_KEY_DOC,
)
def create(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Creates the volume's storage units on every participating node."""
    answers = ctx.fan_out(parts(data))
    units = sorted(
        ({"node": node, **unit} for node, answer in answers.items() for unit in answer["units"]),
        key=lambda u: u["index"],
    )
    return {"volume": data["name"], "type": data["type"], "storage_units": units}


# --- volume_start / volume_stop ------------------------------------------------------------------


def set_state_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    for unit in share["units"]:
        ctx.check_cancelled(f"before unit {unit['index']} on {ctx.node}")
        path = unit_path(ctx.data_dir, share["volume"], unit["index"], unit["path"])
        meta = read_meta(path)
        if meta is None or meta.get("volume") != share["volume"]:
            raise HandlerError(f"storage unit {path} of volume {share['volume']} is missing on node {ctx.node}")
        if meta.get("changed_by") != ctx.run_id:  # a re-delivery of this run keeps the first previous state
            meta["previous_state"] = meta.get("state")
        meta["state"], meta["changed_by"] = share["state"], ctx.run_id
        (path / META).write_text(json.dumps(meta, indent=1))
    return {"units": len(share["units"]), "state": share["state"]}


def restore_state_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    """Undoes set_state_part: each unit this run changed goes back to the state it had."""
    restored = []
    for unit in share["units"]:
        path = unit_path(ctx.data_dir, share["volume"], unit["index"], unit["path"])
        meta = read_meta(path)
        if meta is None or meta.get("changed_by") != ctx.run_id:
            continue  # this run never got to it
        meta["state"] = meta.pop("previous_state", None) or "created"
        meta.pop("changed_by", None)
        (path / META).write_text(json.dumps(meta, indent=1))
        restored.append({"index": unit["index"], "state": meta["state"]})
    return {"restored": restored}


def _set_state(ctx: RunContext, data: dict[str, Any], state: str) -> dict[str, Any]:
    ctx.fan_out(parts(data, state=state))
    return {"volume": data["name"], "state": state}


def _register_state_change(task_type: str, state: str) -> None:
    """volume_start and volume_stop: the same steps, towards another state."""

    def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
        return _set_state(ctx, data, state)

    register(
        task_type,
        validate=validate_existing,
        participants=participants,
        part=set_state_part,
        compensate=restore_state_part,
        reassignable=True,
        order_key=volume_order,
        description=f"Marks every storage unit {state}.",
        schema=EXISTING_SCHEMA,
        order_key_doc=ORDER_KEY_DOC,
    )(run)


_register_state_change("volume_start", "started")
_register_state_change("volume_stop", "stopped")


# --- volume_delete -------------------------------------------------------------------------------


def delete_part(ctx: RunContext, share: dict[str, Any]) -> dict[str, Any]:
    removed = []
    for unit in share["units"]:
        ctx.check_cancelled(f"before unit {unit['index']} on {ctx.node}")
        path = unit_path(ctx.data_dir, share["volume"], unit["index"], unit["path"])
        meta = read_meta(path)
        if meta is None:
            if path.exists():
                raise HandlerError(f"{path} on node {ctx.node} has no storage-unit metadata; not removing it")
        elif meta.get("volume") != share["volume"]:
            raise HandlerError(f"{path} on node {ctx.node} belongs to volume {meta.get('volume')!r}, not removing")
        else:
            shutil.rmtree(path)
            removed.append(str(path))  # only what was there: an undoing of a part that never ran removes nothing
    default_parent = ctx.data_dir / "volumes" / share["volume"]
    if default_parent.exists() and not any(default_parent.iterdir()):
        default_parent.rmdir()
    return {"removed": removed}


@register(
    "volume_delete",
    validate=validate_existing,
    participants=participants,
    part=delete_part,
    reassignable=True,
    order_key=volume_order,
    schema=EXISTING_SCHEMA,
    order_key_doc=ORDER_KEY_DOC,
)
def delete(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Removes every storage unit's directory."""
    ctx.fan_out(parts(data))
    return {"volume": data["name"], "deleted": True}
