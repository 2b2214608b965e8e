"""How a node reports: status updates onto the update stream, never the database.

Every report names its run, and goes first to the node's outbox on local disk
(workers/node/outbox.py), then to the stream by the sender thread (workers/node/sender.py), which
retries through a Redis outage for as long as it lasts and reads the run's end marker before it sends:
a run the server voided (a retry or the dead-node sweep replaced it) reports nothing, and a cancelled
run reports only how it ended, so nothing a node says can land on a newer run of the same task.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import redis

from workers.node import identity, outbox, sender
from workers.protocol.backoff import retry_for
from workers.protocol.messages import Origin, StatusUpdate

log = logging.getLogger(__name__)


def report(task_id: str, run_id: str, status: str, node: str, data: dict[str, Any] | None = None) -> None:
    """Keep one update for this run in the outbox and wake the sender. No Redis here: once this
    returns, the report is on disk and will reach the stream, whatever Redis does meanwhile, so the
    Celery task is never held up by an outage and its message may be acknowledged."""
    update = StatusUpdate(
        task_id=task_id, status=status, status_data=data, source=f"node:{node}", run_id=run_id, origin=Origin.NODE,
        at=time.time(),  # the history's time for this step, however late it reaches the stream
    )  # fmt: skip
    state = identity.state_dir()
    try:
        outbox.at(state).put(update)
    except (sqlite3.Error, OSError):
        # The disk refused it (full, say): straight to the stream then, rather than not at all.
        log.exception("could not keep a report of run %s in the outbox; sending it directly", run_id)
        _send_directly(update)
        return
    sender.running(state).wake()


# A report the outbox would not take is only in memory: sent at once, with the sender's backoff, for up to
# this long (a Redis blip as well as a full disk), then given up with an error in the log; the run's ledger
# may still hold its outcome for the server's stalled-run sweep to ask for (workers/node/lifeline.py).
DIRECT_SEND_SECONDS = 30.0


def _send_directly(update: StatusUpdate) -> None:
    try:
        retry_for(
            lambda: sender.send([update]), seconds=DIRECT_SEND_SECONDS, base=sender.BACKOFF_BASE_SECONDS,
            cap=sender.BACKOFF_CAP_SECONDS, retry_on=redis.RedisError,
        )  # fmt: skip
    except redis.RedisError as exc:
        log.error("a %r report of run %s is lost: neither the outbox nor Redis took it (%s)",
                  update.status, update.run_id, exc)  # fmt: skip


def error_data(exc: BaseException, node: str) -> dict[str, Any]:
    """task_status_data for a failed run: the error's type, message and node, and per-node answers."""
    return failure_data(type(exc).__name__, str(exc), getattr(exc, "details", {}) or {}, node)


def failure_data(kind: str, message: str, details: dict[str, Any], node: str) -> dict[str, Any]:
    """error_data from the error's parts, as the run ledger keeps them (workers/node/lifeline.py)."""
    details = dict(details)
    data: dict[str, Any] = {"error": {"type": kind, "message": message, "node": node}}
    for key in ("nodes", "rolled_back"):
        if key in details:
            data[key] = details.pop(key)
    if details:
        data["error"]["details"] = details
    return data


def cancel_data(exc: BaseException, node: str) -> dict[str, Any]:
    """task_status_data for a run that stopped because it was cancelled: where, and what was undone."""
    return cancelled_data(str(exc), getattr(exc, "details", {}) or {}, node)


def cancelled_data(message: str, details: dict[str, Any], node: str) -> dict[str, Any]:
    """cancel_data from the cancel's parts, as the run ledger keeps them (workers/node/lifeline.py)."""
    details = dict(details)
    data: dict[str, Any] = {"node": node, "cancelled": {"message": message, "stopped": details.pop("stopped", "")}}
    for key in ("nodes", "compensated", "compensation_sent"):
        if key in details:
            data["cancelled"][key] = details.pop(key)
    return data
