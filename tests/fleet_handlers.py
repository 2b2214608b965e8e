"""A task type for the fleet-operation tests (tests/test_fleet_ops.py), registered the way users add their own
(TASKHUB_HANDLER_MODULES): `fleet_spread` may run on any node it names and moves when drained (reassignable),
but unlike the volume types it never fans out, so a node that takes no part in its run (a node whose worker
is not running) does not fail it. Each real run appends its node's name to a file in that node's data dir."""

from __future__ import annotations

from typing import Any

from workers.protocol import payload
from workers.protocol.context import RunContext
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name_list(data, "nodes")
    return data


def participants(data: dict[str, Any]) -> list[str]:
    return [str(n) for n in data["nodes"]]


@register("fleet_spread", validate=validate, participants=participants, reassignable=True, max_retries=0)
def spread(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    with (ctx.data_dir / f"runs-{ctx.task_id}.log").open("a") as log:
        log.write(f"{ctx.node}\n")
    return {"ran_on": ctx.node}
