"""noop: does nothing, on the node named in task_data.node. For benchmarks and smoke tests.

It has no server half: no create-time checks beyond the node being registered, no record.
"""

from __future__ import annotations

from typing import Any

from workers.protocol import payload, schema
from workers.protocol.context import RunContext
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    return data


SCHEMA = schema.payload({"node": schema.NAME}, ["node"])


@register("noop", validate=validate, participants=payload.one_node, schema=SCHEMA)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Returns at once; measures the path a task takes, not the work."""
    return {}
