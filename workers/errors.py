"""Errors raised by task-type code. Messages are what users read in API answers and task_status_data."""

from __future__ import annotations

from typing import Any


class PayloadError(ValueError):
    """A task's task_data is wrong; raised at create time, answered as a 400 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"task_data.{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


class HandlerError(RuntimeError):
    """The work failed on the node for a reason worth showing to the operator as is."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}

    # Celery checks that an exception survives pickling and otherwise falls back to a parent
    # class, which would drop `details` (the per-node answers). Keep every constructor argument.
    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.details))


class FanOutFailed(HandlerError):
    """One or more participating nodes failed or did not answer; `nodes` holds every node's answer."""

    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        failed = sorted(n for n, a in nodes.items() if not a.get("ok"))
        reasons = "; ".join(f"{n}: {nodes[n].get('error', {}).get('message', 'failed')}" for n in failed)
        super().__init__(f"{len(failed)} of {len(nodes)} node(s) failed: {reasons}", {"nodes": nodes})
        self.nodes = nodes

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.nodes,))
