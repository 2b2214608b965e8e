"""noop: does nothing, on the node named in task_data.node. For benchmarks and smoke tests."""

from __future__ import annotations

from typing import Any

from workers.context import RunContext
from workers.handlers import payload
from workers.registry import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    return data


@register("noop", validate=validate, participants=payload.one_node)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Returns at once; measures the path a task takes, not the work."""
    return {}
