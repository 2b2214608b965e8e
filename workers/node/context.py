"""The node's RunContext (workers/protocol/context.py): what a handler gets while it runs here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from workers.protocol import run_end
from workers.protocol.backoff import retry_for
from workers.protocol.errors import Cancelled, RecoverableError, Superseded

log = logging.getLogger(__name__)

# A run's end marker is read at its start and at each of its handler's safe points. A Redis blip there
# must not fail the run for good, so the read is tried again with backoff for up to this long (each try
# bounded by the client's own timeouts, workers/protocol/connection.py); then the run stops rather than
# hold its worker slot through an outage of unknown length.
END_READ_SECONDS = 15.0
END_READ_BACKOFF_BASE_SECONDS, END_READ_BACKOFF_CAP_SECONDS = 0.2, 2.0


class EndMarkerUnreadable(RecoverableError):
    """Redis did not say, for END_READ_SECONDS, whether the server ended this run. Recoverable: the run
    stopped at a safe point knowing nothing was wrong with its work, so its automatic retry (if it has
    one left) may run it again."""


@dataclass(frozen=True)
class NodeRunContext:
    task_id: str
    run_id: str
    task_type: str
    node: str
    data_dir: Path
    attempt: int = 0
    retries: int = 0
    final: bool = True
    # Undoing a part (rollback, or after a cancel): a cancel must not interrupt the undoing itself.
    compensating: bool = False

    @property
    def run_key(self) -> str:
        """Names this run in the node's ledger (workers/node/guard.py) and in fan-out messages."""
        return f"{self.run_id}.{self.retries}"

    def fan_out(self, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from workers.node.fanout import fan_out

        return fan_out(self, parts)

    def progress(self, percent: float, message: str = "") -> None:
        from workers.node.reporter import report

        data = {"node": self.node, "progress": {"percent": round(float(percent), 1), "message": message}}
        report(self.task_id, self.run_id, "in_progress", self.node, data)

    def cancelled(self) -> bool:
        return not self.compensating and read_end(self.task_id, self.run_id) is not None

    def check_cancelled(self, step: str = "") -> None:
        if not self.compensating:
            stop_if_ended(self.task_id, self.run_id, read_end(self.task_id, self.run_id), step)


def read_end(task_id: str, run_id: str) -> run_end.End | None:
    """The run's end marker (run_end.end_of), read again with backoff while Redis does not answer, for
    up to END_READ_SECONDS. Raises EndMarkerUnreadable after that."""
    tries = 0

    def read() -> run_end.End | None:
        nonlocal tries
        tries += 1
        return run_end.end_of(run_id)

    try:
        return retry_for(
            read, seconds=END_READ_SECONDS, base=END_READ_BACKOFF_BASE_SECONDS, cap=END_READ_BACKOFF_CAP_SECONDS,
            retry_on=redis.RedisError,
            first_failure=lambda exc: log.warning("cannot read the end marker of run %s: %s; retrying", run_id, exc),
        )  # fmt: skip
    except redis.RedisError as exc:
        raise EndMarkerUnreadable(
            f"could not read whether run {run_id} of task {task_id} was cancelled or ended: Redis did "
            f"not answer for {END_READ_SECONDS:g} s ({type(exc).__name__}: {exc})",
            {"tries": tries},
        ) from exc


def stop_if_ended(task_id: str, run_id: str, end: run_end.End | None, step: str = "") -> None:
    """Raise what a run's end marker means at this point: Cancelled (reported) or Superseded (silent)."""
    where = f" {step}" if step else ""
    if end is run_end.End.VOID:
        raise Superseded(f"run {run_id} of task {task_id} was ended by the server{where}")
    if end is run_end.End.CANCEL:
        raise Cancelled(f"task {task_id} was cancelled{where}", {"stopped": step or "at a safe point"})
