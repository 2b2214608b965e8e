"""How a node reports: status updates onto the update stream, never the database."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from tasks_app import update_stream
from tasks_app.errors import UpdateQueueUnavailable
from tasks_app.transitions import StatusUpdate

log = logging.getLogger(__name__)


def report(task_id: str, status: str, node: str, data: dict[str, Any] | None = None) -> None:
    """Push one update, retrying through a Redis outage: a finished task's result must not be lost."""
    update = StatusUpdate(task_id=task_id, status=status, status_data=data, source=f"node:{node}")
    deadline = time.monotonic() + float(settings.TASKHUB_REPORT_RETRY_SECONDS)
    delay = 0.2
    while True:
        try:
            update_stream.push(update)
            return
        except UpdateQueueUnavailable as exc:
            if time.monotonic() > deadline:
                log.error("could not report %s=%s for %s: %s", status, task_id, node, exc)
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def error_data(exc: BaseException, node: str) -> dict[str, Any]:
    """task_status_data for a failed task: the error's type, message and node, and per-node answers."""
    details = dict(getattr(exc, "details", {}) or {})
    data: dict[str, Any] = {"error": {"type": type(exc).__name__, "message": str(exc), "node": node}}
    for key in ("nodes", "rolled_back"):
        if key in details:
            data[key] = details.pop(key)
    if details:
        data["error"]["details"] = details
    return data
