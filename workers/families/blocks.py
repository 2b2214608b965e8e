"""The block family: block_alloc reserves blocks on a node against its capacity, block_free gives them
back. The node keeps its allocations in a ledger in its data directory.

Server half: tasks_app/families/blocks.py (checks against the database, the BlockAllocation record).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings

from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError
from workers.protocol.specs import register


def capacity_blocks() -> int:
    return int(settings.TASKHUB_NODE_CAPACITY_BLOCKS)


def ledger_path(data_dir: Path) -> Path:
    return data_dir / "blocks.json"


@contextmanager
def ledger(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The node's block ledger, locked and read; saved (atomically) when the block exits cleanly."""
    path = ledger_path(data_dir)
    with (data_dir / ".blocks.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"allocations": {}}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _blocks(entry: Any) -> int:
    # {"blocks": n, "run": run_id}; a bare number in ledgers written before runs had ids.
    return int(entry["blocks"]) if isinstance(entry, dict) else int(entry)


def allocated(data_dir: Path) -> dict[str, int]:
    """allocation id -> blocks, for every allocation the node holds."""
    path = ledger_path(data_dir)
    entries = json.loads(path.read_text())["allocations"] if path.exists() else {}
    return {key: _blocks(entry) for key, entry in entries.items()}


def validate_alloc(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "node")
    payload.positive_int(data, "blocks")
    return data


def validate_free(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "node")
    payload.identifier(data, "allocation")
    return data


ALLOC_SCHEMA = schema.payload(
    {"cluster": schema.NAME, "node": schema.NAME, "blocks": schema.positive_int()}, ["cluster", "node", "blocks"]
)
FREE_SCHEMA = schema.payload(
    {
        "cluster": schema.NAME,
        "node": schema.NAME,
        "allocation": {**schema.IDENTIFIER, "description": "a block_alloc task's id"},
    },
    ["cluster", "node", "allocation"],
)


def allocation_order(data: dict[str, Any]) -> str:
    return f"block:{data['allocation']}"


@register("block_alloc", validate=validate_alloc, participants=payload.one_node, schema=ALLOC_SCHEMA)
def alloc(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Reserves `blocks` blocks on the node; fails when fewer are free. The allocation's id is the task id."""
    wanted = int(data["blocks"])
    capacity = capacity_blocks()
    ctx.check_cancelled("before allocating")
    with ledger(ctx.data_dir) as state:
        allocations: dict[str, Any] = state["allocations"]
        used = sum(_blocks(e) for e in allocations.values())
        held = allocations.get(ctx.task_id)
        replaced: dict[str, Any] = {}
        if held is not None:
            if isinstance(held, dict) and held.get("run") == ctx.run_id:  # this run, delivered again
                return {"allocation_id": ctx.task_id, "blocks": _blocks(held), "free_blocks": capacity - used}
            # Another run's entry under this id: one that never completed (the server refuses an id whose
            # allocation it recorded), such as a run failed by hand, deleted, or cut off by the dead-node
            # sweep. Its blocks were never anybody's: this run replaces it rather than reusing it.
            replaced = {
                "replaced": {"run": held.get("run") if isinstance(held, dict) else None, "blocks": _blocks(held)}
            }
            used -= _blocks(allocations.pop(ctx.task_id))
        free = capacity - used
        if wanted > free:
            raise HandlerError(
                f"not enough free blocks on node {ctx.node}: asked for {wanted}, {free} free of {capacity}",
                {"asked": wanted, "free_blocks": free, "capacity_blocks": capacity},
            )
        allocations[ctx.task_id] = {"blocks": wanted, "run": ctx.run_id}
    return {"allocation_id": ctx.task_id, "blocks": wanted, "free_blocks": free - wanted, **replaced}


@register(
    "block_free",
    validate=validate_free,
    participants=payload.one_node,
    order_key=allocation_order,
    schema=FREE_SCHEMA,
    order_key_doc="block:<allocation>",
)
def free(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Gives an allocation's blocks back to the node. Freeing one that is already gone frees nothing."""
    ctx.check_cancelled("before freeing")
    with ledger(ctx.data_dir) as state:
        allocations: dict[str, Any] = state["allocations"]
        held = allocations.pop(data["allocation"], None)
        left = capacity_blocks() - sum(_blocks(e) for e in allocations.values())
    return {"allocation_id": data["allocation"], "freed": _blocks(held) if held is not None else 0, "free_blocks": left}
