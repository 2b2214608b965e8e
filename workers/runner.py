"""Runs handlers on a node, once per (task, attempt), whatever the broker redelivers."""

from __future__ import annotations

from typing import Any

from workers import node, registry
from workers.context import RunContext
from workers.errors import HandlerError
from workers.guard import RunGuard


class StoredFailure(HandlerError):
    """A duplicate delivery of a run that already failed: fail the same way, without re-running."""


def run_task(*, task_id: str, task_type: str, task_data: dict[str, Any], attempt: int) -> dict[str, Any]:
    ttype = registry.get(task_type)
    if ttype is None:
        raise HandlerError(f"node {node.name()} has no handler for task type {task_type!r}")
    ctx = RunContext(task_id, task_type, node.name(), node.data_dir(), attempt)
    return _once(RunGuard(node.state_dir(), f"{task_id}.{attempt}"), lambda: ttype.run(ctx, task_data))


def run_part(*, task_id: str, task_type: str, payload: dict[str, Any], attempt: int) -> dict[str, Any]:
    ttype = registry.get(task_type)
    if ttype is None or ttype.part is None:
        raise HandlerError(f"node {node.name()} has no per-node handler for task type {task_type!r}")
    part = ttype.part
    ctx = RunContext(task_id, task_type, node.name(), node.data_dir(), attempt)
    return _once(RunGuard(node.state_dir(), f"{task_id}.{attempt}.part"), lambda: part(ctx, payload))


def _once(guard: RunGuard, work: Any) -> dict[str, Any]:
    with guard.hold():
        done = guard.outcome()
        if done is not None:
            if done["ok"]:
                return dict(done["result"])
            raise StoredFailure(done["error"]["message"], done["error"].get("details"))
        try:
            result = dict(work() or {})
        except Exception as exc:
            guard.record({"ok": False, "error": {"message": str(exc), "details": getattr(exc, "details", {})}})
            raise
        guard.record({"ok": True, "result": result})
        return result
