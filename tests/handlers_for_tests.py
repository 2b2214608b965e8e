"""A task type registered the way users add their own (TASKHUB_HANDLER_MODULES), for the end-to-end
tests: it sleeps, and appends a line to a file on the node for every time it really runs."""

from __future__ import annotations

import time
from typing import Any

from workers.context import RunContext
from workers.errors import PayloadError
from workers.handlers import payload
from workers.registry import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    seconds = data.get("seconds", 0)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 60:
        raise PayloadError("seconds", "must be a number from 0 to 60")
    return data


@register("test_sleep", validate=validate, participants=payload.one_node)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    with (ctx.data_dir / f"runs-{ctx.task_id}.log").open("a") as log:
        log.write(f"{time.time()}\n")
    time.sleep(float(data.get("seconds", 0)))
    return {"slept": data.get("seconds", 0)}
