"""The fault suite's task types, loaded by every process of its stack (TASKHUB_HANDLER_MODULES=faults.handlers),
the way users add their own (workers/protocol/specs.py).

fault_work sleeps and then writes one line, its run key, to `executions.log` in the node's data dir: a run
whose handler finished twice (on one node or two) shows twice there, whatever the database says. It calls
neither Redis nor the broker, so an outage tests the node's report path and nothing else.

fault_poison always fails, after sleeping task_data.seconds: with a handler error, a recoverable error
(retried, then failed), or an exception taskhub knows nothing about.
"""

from __future__ import annotations

import os
import time
from typing import Any

from faults import EXECUTIONS_LOG
from workers.protocol import payload
from workers.protocol.context import RunContext
from workers.protocol.errors import HandlerError, PayloadError, RecoverableError
from workers.protocol.specs import register

POISON_KINDS = ("error", "recoverable", "exception")


def _validate_work(data: dict[str, Any]) -> dict[str, Any]:
    payload.name(data, "node")
    seconds = data.get("seconds", 0)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 60:
        raise PayloadError("seconds", "must be a number from 0 to 60")
    return data


def _validate_poison(data: dict[str, Any]) -> dict[str, Any]:
    _validate_work(data)
    if data.get("kind", "error") not in POISON_KINDS:
        raise PayloadError("kind", f"must be one of {', '.join(POISON_KINDS)}")
    return data


@register("fault_work", validate=_validate_work, participants=payload.one_node, max_retries=0)
def work(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Sleeps task_data.seconds, then notes that this run's handler finished."""
    time.sleep(float(data.get("seconds", 0)))
    line = f"{ctx.run_id} {ctx.task_id}\n".encode()
    # One O_APPEND write: lines of concurrent runs never interleave.
    fd = os.open(ctx.data_dir / EXECUTIONS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {"slept": data.get("seconds", 0)}


@register("fault_poison", validate=_validate_poison, participants=payload.one_node, max_retries=2)
def poison(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Fails every time, as task_data.kind says."""
    time.sleep(float(data.get("seconds", 0)))
    kind = data.get("kind", "error")
    if kind == "recoverable":
        raise RecoverableError(f"poison: recoverable failure (try {ctx.retries + 1})")
    if kind == "exception":
        raise ZeroDivisionError("poison: an exception no handler expects")
    raise HandlerError("poison: this task always fails")
