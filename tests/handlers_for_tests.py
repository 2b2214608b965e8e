"""Task types registered the way users add their own (TASKHUB_HANDLER_MODULES), for the end-to-end
tests. test_sleep sleeps in steps (reporting progress, stopping when cancelled) and appends a line to
a file on the node every time it really runs; test_flaky fails recoverably until its Nth run;
test_wait_file finishes when the test says so."""

from __future__ import annotations

import time
from typing import Any

from workers.protocol import payload
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError, PayloadError, RecoverableError
from workers.protocol.specs import register


def validate(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    seconds = data.get("seconds", 0)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 60:
        raise PayloadError("seconds", "must be a number from 0 to 60")
    return data


@register("test_sleep", validate=validate, participants=payload.one_node, max_retries=0)
def run(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    with (ctx.data_dir / f"runs-{ctx.task_id}.log").open("a") as log:
        log.write(f"{time.time()}\n")
    total = float(data.get("seconds", 0))
    steps = max(1, int(total / 0.25))
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(total / steps)
        ctx.progress(100 * (step + 1) / steps, f"slept {step + 1} of {steps} steps")
    return {"slept": total}


@register("test_flaky", validate=validate, participants=payload.one_node, max_retries=3)
def flaky(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Fails recoverably until it has run `succeed_on` times."""
    runs = ctx.data_dir / f"runs-{ctx.task_id}.log"
    with runs.open("a") as log:
        log.write(f"{time.time()}\n")
    count = len(runs.read_text().splitlines())
    if count < int(data.get("succeed_on", 1)):
        raise RecoverableError(f"device busy (run {count})")
    return {"runs": count}


@register("test_wait_file", validate=validate, participants=payload.one_node, max_retries=0)
def wait_file(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Waits, touching neither Redis nor the broker, until the test drops `go-<task_id>` in the node's
    data dir (so it can finish while Redis is down); then succeeds, or fails if task_data.fail."""
    go = ctx.data_dir / f"go-{ctx.task_id}"
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise HandlerError(f"{go} never appeared")
        time.sleep(0.05)
    if data.get("fail"):
        raise HandlerError("failed as the test asked")
    return {"waited": True}
