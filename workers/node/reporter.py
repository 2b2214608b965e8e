"""How a node reports: status updates onto the update stream, never the database.

Every report names its run. Before sending, the node reads the run's end marker: a run the server
voided (a retry or the dead-node sweep replaced it) reports nothing, and a cancelled run reports only
how it ended, so nothing a node says can land on a newer run of the same task.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings

from workers.protocol import run_end
from workers.protocol.backoff import backoff_seconds
from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.status import TERMINAL
from workers.protocol.stream import push_update

log = logging.getLogger(__name__)


def report(task_id: str, run_id: str, status: str, node: str, data: dict[str, Any] | None = None) -> None:
    """Push one update for this run, retrying through a Redis outage: a finished run's result must not
    be lost. Every Redis call on this path is inside the retry."""
    update = StatusUpdate(
        task_id=task_id, status=status, status_data=data, source=f"node:{node}", run_id=run_id, origin=Origin.NODE
    )
    deadline = time.monotonic() + float(settings.TASKHUB_REPORT_RETRY_SECONDS)
    tries = 0
    while True:
        try:
            end = run_end.end_of(run_id)
            if end is run_end.End.VOID or (end is run_end.End.CANCEL and status not in TERMINAL):
                return
            push_update(update)
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                log.error("could not report %s=%s of run %s on %s: %s", task_id, status, run_id, node, exc)
                raise
            time.sleep(backoff_seconds(tries, base=0.2, cap=5.0, jitter=True))
            tries += 1


def error_data(exc: BaseException, node: str) -> dict[str, Any]:
    """task_status_data for a failed run: the error's type, message and node, and per-node answers."""
    details = dict(getattr(exc, "details", {}) or {})
    data: dict[str, Any] = {"error": {"type": type(exc).__name__, "message": str(exc), "node": node}}
    for key in ("nodes", "rolled_back"):
        if key in details:
            data[key] = details.pop(key)
    if details:
        data["error"]["details"] = details
    return data


def cancel_data(exc: BaseException, node: str) -> dict[str, Any]:
    """task_status_data for a run that stopped because it was cancelled: where, and what was undone."""
    details = dict(getattr(exc, "details", {}) or {})
    data: dict[str, Any] = {"node": node, "cancelled": {"message": str(exc), "stopped": details.pop("stopped", "")}}
    for key in ("nodes", "compensated", "compensation_sent"):
        if key in details:
            data["cancelled"][key] = details.pop(key)
    return data
