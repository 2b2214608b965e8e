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
    attempt: int = 0

    def fan_out(self, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Run each node's part on that node, gather every answer; raises FanOutFailed if any failed."""
        from workers.fanout import fan_out

        return fan_out(self, parts)
