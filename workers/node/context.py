"""The node's RunContext (workers/protocol/context.py): what a handler gets while it runs here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.protocol import run_end
from workers.protocol.errors import Cancelled, Superseded


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
        return not self.compensating and run_end.end_of(self.run_id) is not None

    def check_cancelled(self, step: str = "") -> None:
        if not self.compensating:
            stop_if_ended(self.task_id, self.run_id, run_end.end_of(self.run_id), step)


def stop_if_ended(task_id: str, run_id: str, end: run_end.End | None, step: str = "") -> None:
    """Raise what a run's end marker means at this point: Cancelled (reported) or Superseded (silent)."""
    where = f" {step}" if step else ""
    if end is run_end.End.VOID:
        raise Superseded(f"run {run_id} of task {task_id} was ended by the server{where}")
    if end is run_end.End.CANCEL:
        raise Cancelled(f"task {task_id} was cancelled{where}", {"stopped": step or "at a safe point"})
