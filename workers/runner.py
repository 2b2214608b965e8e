"""Runs handlers on a node, once per run (task, attempt, automatic retry), whatever the broker redelivers."""

from __future__ import annotations

from typing import Any

from workers import node, registry
from workers.cancel import is_cancelled, is_void
from workers.context import RunContext
from workers.errors import Cancelled, FanOutFailed, HandlerError, RecoverableError
from workers.guard import RunGuard


class Superseded(Cancelled):
    """This attempt was ended by the server (its node was declared dead, or a retry replaced it)."""


class StoredFailure(HandlerError):
    """A duplicate delivery of a run that already failed: fail the same way, without re-running."""


def run_task(
    *, task_id: str, task_type: str, task_data: dict[str, Any], attempt: int, retries: int = 0, final: bool = True
) -> dict[str, Any]:
    ttype = registry.get(task_type)
    if ttype is None:
        raise HandlerError(f"node {node.name()} has no handler for task type {task_type!r}")
    if is_cancelled(task_id):
        raise Cancelled(f"task {task_id} was cancelled before it started")
    if is_void(task_id, attempt):
        raise Superseded(f"attempt {attempt} of task {task_id} was ended by the server before it started")
    ctx = RunContext(task_id, task_type, node.name(), node.data_dir(), attempt, retries, final)
    return _once(RunGuard(node.state_dir(), ctx.run_key), lambda: ttype.run(ctx, task_data))


def run_part(
    *, task_id: str, task_type: str, payload: dict[str, Any], attempt: int, retries: int = 0, mode: str = "part"
) -> dict[str, Any]:
    """One participant's piece of a fanned-out task (mode "part"), or its undoing ("compensate")."""
    ttype = registry.get(task_type)
    fn = None if ttype is None else (ttype.part if mode == "part" else ttype.compensate)
    if fn is None:
        raise HandlerError(f"node {node.name()} has no {mode} handler for task type {task_type!r}")
    ctx = RunContext(task_id, task_type, node.name(), node.data_dir(), attempt, retries)
    if mode == "part" and (is_cancelled(task_id) or is_void(task_id, attempt)):
        raise Cancelled(f"task {task_id} was cancelled, or attempt {attempt} ended")
    return _once(RunGuard(node.state_dir(), f"{ctx.run_key}.{mode}"), lambda: fn(ctx, payload))


def _once(guard: RunGuard, work: Any) -> dict[str, Any]:
    with guard.hold():
        done = guard.outcome()
        if done is not None:
            if done["ok"]:
                return dict(done["result"])
            error = done["error"]
            # A recoverable failure stays recoverable when a duplicate replays it; otherwise the
            # duplicate would fail the task for good while its automatic retry is still due.
            replay = RecoverableError if error.get("recoverable") else StoredFailure
            raise replay(error["message"], error.get("details"))
        try:
            result = dict(work() or {})
        except Exception as exc:
            recoverable = isinstance(exc, RecoverableError) or (isinstance(exc, FanOutFailed) and exc.recoverable)
            error = {"message": str(exc), "details": getattr(exc, "details", {}), "recoverable": recoverable}
            guard.record({"ok": False, "error": error})
            raise
        guard.record({"ok": True, "result": result})
        return result
