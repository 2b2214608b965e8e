"""Runs handlers on a node, once per run (run id and automatic retry), whatever the broker redelivers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.node import identity, running
from workers.node.context import NodeRunContext, read_end, stop_if_ended
from workers.node.guard import RunGuard, prune_now_and_then, run_here
from workers.protocol import keys, run_end, specs
from workers.protocol.errors import Cancelled, FanOutFailed, HandlerError, RecoverableError, StoredFailure, Superseded


def _refuse_ended(task_id: str, run_id: str) -> None:
    """A run the server cancelled or ended never starts (and a part of one never runs).

    A cancelled run's message confirms the cancel ("cancelled before it started") only if no other
    delivery of the same run is running here or has run here: that one reports how it ended itself,
    and a duplicate (the sweep sends a cancelled run again when its message may be lost) must not
    claim it never started. A Redis blip here is ridden out (read_end), not a failure of the run."""
    end = read_end(task_id, run_id)
    if end is run_end.End.CANCEL and run_here(identity.state_dir(), run_id):
        raise Superseded(f"run {run_id} of task {task_id} is running or has run here; it reports for itself")
    stop_if_ended(task_id, run_id, end, "before it started")


def run_task(
    *,
    task_id: str,
    run_id: str,
    task_type: str,
    task_data: dict[str, Any],
    attempt: int,
    retries: int = 0,
    final: bool = True,
) -> dict[str, Any]:
    running.hold(run_id)  # held since its message arrived (signals.on_received); this makes sure of it
    spec = specs.get(task_type)
    if spec is None:
        raise HandlerError(f"node {identity.name()} has no handler for task type {task_type!r}")
    _refuse_ended(task_id, run_id)
    ctx = NodeRunContext(task_id, run_id, task_type, identity.name(), identity.data_dir(), attempt, retries, final)
    prune_now_and_then(identity.state_dir(), keys.run_state_ttl())
    return _once(RunGuard(identity.state_dir(), ctx.run_key), lambda: spec.run(ctx, task_data))


def run_part(
    *,
    task_id: str,
    run_id: str,
    task_type: str,
    payload: dict[str, Any],
    attempt: int,
    retries: int = 0,
    mode: str = "part",
) -> dict[str, Any]:
    """One participant's piece of a fanned-out run (mode "part"), or its undoing ("compensate")."""
    spec = specs.get(task_type)
    fn = None if spec is None else (spec.part if mode == "part" else spec.compensate)
    if fn is None:
        raise HandlerError(f"node {identity.name()} has no {mode} handler for task type {task_type!r}")
    compensating = mode == "compensate"
    ctx = NodeRunContext(
        task_id, run_id, task_type, identity.name(), identity.data_dir(), attempt, retries, compensating=compensating
    )
    state = identity.state_dir()
    prune_now_and_then(state, keys.run_state_ttl())  # a node that only ever takes parts prunes too
    if compensating:
        # Undo only after this node's part of the run has stopped: wait for its lock, if it is running.
        with RunGuard(state, f"{ctx.run_key}.part").hold():
            pass
    else:
        _refuse_ended(task_id, run_id)
    return _once(RunGuard(state, f"{ctx.run_key}.{mode}"), lambda: fn(ctx, payload))


def _once(guard: RunGuard, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    with guard.hold():
        done = guard.outcome()
        if done is not None:
            if done["ok"]:
                return dict(done["result"])
            error = done["error"]
            # A recoverable failure stays recoverable when a duplicate replays it, and a cancel stays a
            # cancel; otherwise the duplicate would fail the task for good.
            replay: type[HandlerError] = StoredFailure
            if error.get("recoverable"):
                replay = RecoverableError
            elif error.get("kind") == "Cancelled":
                replay = Cancelled
            raise replay(error["message"], error.get("details"))
        try:
            result = dict(work() or {})
        except Superseded:
            raise  # nothing to record: the run is over for good, and nobody reads its outcome
        except Exception as exc:
            recoverable = isinstance(exc, RecoverableError) or (isinstance(exc, FanOutFailed) and exc.recoverable)
            kind = "Cancelled" if isinstance(exc, Cancelled) else type(exc).__name__
            error = {
                "message": str(exc),
                "details": getattr(exc, "details", {}),
                "recoverable": recoverable,
                "kind": kind,
            }
            guard.record({"ok": False, "error": error})
            raise
        guard.record({"ok": True, "result": result})
        return result
