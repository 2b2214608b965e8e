"""block_alloc: reserve blocks on a node, against that node's capacity, in a ledger on the node."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings

from workers import node
from workers.context import RunContext
from workers.errors import HandlerError
from workers.handlers import payload
from workers.registry import register


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


def allocated(data_dir: Path) -> dict[str, int]:
    path = ledger_path(data_dir)
    return dict(json.loads(path.read_text())["allocations"]) if path.exists() else {}


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "cluster")
    payload.name(data, "node")
    payload.positive_int(data, "blocks")
    return data


@register("block_alloc", validate=validate, participants=payload.one_node)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Reserves `blocks` blocks on the node; fails when fewer are free."""
    wanted = int(data["blocks"])
    capacity = capacity_blocks()
    with ledger(ctx.data_dir) as state:
        allocations: dict[str, int] = state["allocations"]
        if ctx.task_id in allocations:  # the same allocation, asked again
            used = sum(allocations.values())
            return {"allocation_id": ctx.task_id, "blocks": allocations[ctx.task_id], "free_blocks": capacity - used}
        free = capacity - sum(allocations.values())
        if wanted > free:
            raise HandlerError(
                f"not enough free blocks on node {node.name()}: asked for {wanted}, {free} free of {capacity}",
                {"asked": wanted, "free_blocks": free, "capacity_blocks": capacity},
            )
        allocations[ctx.task_id] = wanted
    return {"allocation_id": ctx.task_id, "blocks": wanted, "free_blocks": free - wanted}
