"""A node answers the server's questions about runs it no longer lists (workers/protocol/run_asks.py).

The stalled-run sweep (tasks_app/fleet/stalled.py) asks when a task is `received` or `in_progress` on
this node but the node's heartbeat names its run neither as held nor as undelivered. Before each heartbeat,
the node looks the run up in its ledger (workers/node/guard.py), on its own disk:

* the ledger has the run's outcome (its report was lost: the worker died between the ledger and the
  outbox, and the broker lost the message that would have replayed it): the node reports that outcome
  through its outbox, as the signal receivers would have (workers/node/signals.py), and forgets the
  question. The report goes the usual way, as this node's, through the writers and the transition function;
* it has none: the heartbeat says so (`no_outcome`), and the sweep fails the run and retries it where the
  type allows.

A run the node does list (held, or with a report in the outbox) gets no answer: the heartbeat answers it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from workers.node import guard, outbox, running
from workers.node.reporter import cancelled_data, failure_data, report
from workers.protocol import run_asks, specs
from workers.protocol.run_asks import Ask

log = logging.getLogger(__name__)


def answer(node: str, state_dir: Path) -> list[str]:
    """Answer the questions asked of this node. Returns the runs it has no outcome for (at most
    running.MAX_LISTED). Raises redis.RedisError if the questions cannot be read or forgotten."""
    asks = run_asks.asked(node)
    if not asks:
        return []
    held = running.held()  # before the outbox, as in running.runs_report
    try:
        pending = outbox.at(state_dir).pending_runs()
    except sqlite3.Error as exc:
        log.warning("cannot answer the server's questions about runs: the outbox is unreadable: %s", exc)
        return []
    none: list[str] = []
    reported: list[str] = []
    for run_id, question in sorted(asks.items()):
        if run_id in held or run_id in pending:
            continue
        try:
            found = outcome_report(state_dir, run_id, question, node)
            if found is not None:
                report(question.task_id, run_id, found[0], node, found[1])
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("cannot tell the server how run %s ended: %s", run_id, exc)
            continue
        if found is None:
            none.append(run_id)
        else:
            log.warning("run %s of task %s: reported the outcome its ledger kept, at the server's question",
                        run_id, question.task_id)  # fmt: skip
            reported.append(run_id)
    run_asks.forget(node, reported)
    return none[: running.MAX_LISTED]


def outcome_report(state_dir: Path, run_id: str, question: Ask, node: str) -> tuple[str, dict[str, Any]] | None:
    """The report (status, task_status_data) of the run's outcome as this node's ledger kept it, or None
    if it kept none: the run never finished here, or its last try failed with an automatic retry due."""
    found = guard.last_outcome(state_dir, run_id)
    if found is None:
        return None
    retries, outcome = found
    if outcome.get("ok"):
        result = outcome.get("result")
        data = result if isinstance(result, dict) else {"result": result}
        return "completed", {**data, "node": node}
    recorded = outcome.get("error")
    error: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    message, details = str(error.get("message", "")), dict(error.get("details") or {})
    if error.get("kind") == "Cancelled":
        return "cancelled", cancelled_data(message, details, node)
    spec = specs.get(question.task_type)
    if error.get("recoverable") and retries < (spec.retry_limit() if spec is not None else 0):
        return None  # its retry was due and never ran: the run has no outcome
    kind = str(error.get("kind") or "HandlerError")
    return "failed", {**failure_data(kind, message, details, node), "retries": retries}
