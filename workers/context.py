"""What a handler gets: who and where it runs, and how to reach the other participants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunContext:
    task_id: str
    task_type: str
    node: str
    data_dir: Path
    attempt: int = 0  # explicit retries (POST .../retry/) start a new attempt
    retries: int = 0  # automatic retries within this attempt
    final: bool = True  # no automatic retry is left: a failure now is for good

    @property
    def run_key(self) -> str:
        """Names this run in the node's ledger (workers.guard) and in fan-out messages."""
        return f"{self.task_id}.{self.attempt}.{self.retries}"

    def fan_out(self, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Run each node's part on that node, gather every answer; raises FanOutFailed if any failed.

        When the failure is for good and the type declares a compensating step, the nodes whose part
        succeeded are rolled back first, and the error says what was rolled back."""
        from workers.fanout import fan_out

        return fan_out(self, parts)

    def progress(self, percent: float, message: str = "") -> None:
        """Show progress in task_status_data while the task runs."""
        from workers.reporter import report

        data = {"node": self.node, "progress": {"percent": round(float(percent), 1), "message": message}}
        report(self.task_id, "in_progress", self.node, data)

    def cancelled(self) -> bool:
        from workers.cancel import is_cancelled

        return is_cancelled(self.task_id)

    def check_cancelled(self) -> None:
        """Long handlers call this between steps; it stops them when the task was cancelled."""
        from workers.errors import Cancelled

        if self.cancelled():
            raise Cancelled(f"task {self.task_id} was cancelled")
