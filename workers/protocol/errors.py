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

    def __init__(self, nodes: dict[str, dict[str, Any]], rolled_back: dict[str, dict[str, Any]] | None = None) -> None:
        failed = sorted(n for n, a in nodes.items() if not a.get("ok"))
        reasons = "; ".join(f"{n}: {nodes[n].get('error', {}).get('message', 'failed')}" for n in failed)
        details: dict[str, Any] = {"nodes": nodes}
        if rolled_back is not None:
            details["rolled_back"] = rolled_back
        super().__init__(f"{len(failed)} of {len(nodes)} node(s) failed: {reasons}", details)
        self.nodes = nodes
        self.rolled_back = rolled_back

    @property
    def recoverable(self) -> bool:
        """True when every failed node failed for a reason another attempt may cure."""
        kinds = {a.get("error", {}).get("type") for a in self.nodes.values() if not a.get("ok")}
        return kinds <= RECOVERABLE_KINDS

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.nodes, self.rolled_back))


class RecoverableError(HandlerError):
    """Worth another try later (a peer down, a device busy): retried with backoff up to the type's limit."""


class Cancelled(HandlerError):
    """The task was cancelled; the handler stopped at a safe point (details["stopped"] says where),
    after compensating what it had done where its type can (details["compensated"])."""


class Superseded(Cancelled):
    """The server ended this run itself (a retry or the dead-node sweep replaced it): it stops and
    reports nothing, since another run of the same task may be under way."""


class StoredFailure(HandlerError):
    """A duplicate delivery of a run that already failed: fail the same way, without re-running."""


# Fan-out answers whose failure another attempt may cure.
RECOVERABLE_KINDS = frozenset({"NodeOffline", "Timeout", "RecoverableError"})
