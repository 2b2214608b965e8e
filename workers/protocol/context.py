"""What a handler gets: who and where it runs, and how to reach the other participants.

A Protocol, so that task-type families (workers/families/) depend on this module only and the
server can import their specs without the node's runtime; workers/node/context.py implements it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class RunContext(Protocol):
    @property
    def task_id(self) -> str: ...

    @property
    def run_id(self) -> str:
        """This attempt's identity: keys everything the node keeps about it."""
        ...

    @property
    def task_type(self) -> str: ...

    @property
    def node(self) -> str:
        """The node this runs on."""
        ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def attempt(self) -> int:
        """Explicit retries (POST .../retry/) start a new attempt, with a new run id."""
        ...

    @property
    def retries(self) -> int:
        """Automatic retries within this run."""
        ...

    @property
    def final(self) -> bool:
        """No automatic retry is left: a failure now is for good."""
        ...

    def fan_out(self, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Run each node's part on that node and gather every answer; raises FanOutFailed if any
        failed (after rolling back the others when the failure is for good and the type can), or
        Cancelled if the task was cancelled meanwhile (after compensating the parts done)."""
        ...

    def progress(self, percent: float, message: str = "") -> None:
        """Show progress in task_status_data while the task runs."""
        ...

    def cancelled(self) -> bool:
        """Whether the server asked this run to stop (one Redis read)."""
        ...

    def check_cancelled(self, step: str = "") -> None:
        """A safe point: raises Cancelled when the task was cancelled, naming where it stopped."""
        ...
