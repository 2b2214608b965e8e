"""Celery signal receivers: a node's task status goes to the update stream, through the writers and
the one transition function. Only taskhub.execute reports; its parts answer their initiator."""

from __future__ import annotations

from typing import Any

from celery import signals

from workers import node
from workers.cancel import is_cancelled, is_void
from workers.errors import Cancelled
from workers.queues import EXECUTE_TASK
from workers.reporter import error_data, report
from workers.runner import Superseded


def _ours(task: Any) -> bool:
    return getattr(task, "name", None) == EXECUTE_TASK


def _ended(task_kwargs: dict[str, Any]) -> bool:
    """A cancelled task, or an attempt the server ended: its messages must not report progress,
    which could land on a newer attempt of the same task."""
    return is_cancelled(task_kwargs["task_id"]) or is_void(task_kwargs["task_id"], task_kwargs.get("attempt", 0))


@signals.task_received.connect
def on_received(request: Any = None, **_: Any) -> None:
    if request is not None and request.name == EXECUTE_TASK and not _ended(request.kwargs):
        report(request.kwargs["task_id"], "received", node.name())


@signals.task_prerun.connect
def on_start(sender: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if _ours(sender) and kwargs and not _ended(kwargs):
        data = {"node": node.name(), "attempt": kwargs.get("attempt", 0)}
        report(kwargs["task_id"], "in_progress", node.name(), data)


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if _ours(sender) and not is_void(sender.request.kwargs["task_id"], sender.request.kwargs.get("attempt", 0)):
        data = result if isinstance(result, dict) else {"result": result}
        report(sender.request.kwargs["task_id"], "completed", node.name(), {**data, "node": node.name()})


@signals.task_failure.connect
def on_failure(sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any) -> None:
    if _ours(sender) and exception is not None:
        task_kwargs = kwargs or sender.request.kwargs
        if isinstance(exception, Superseded) or is_void(task_kwargs["task_id"], task_kwargs.get("attempt", 0)):
            return  # the server ended this attempt itself; another attempt may be under way
        if isinstance(exception, Cancelled):
            # Already cancelled on the server; saying so again is a no-op that keeps the log honest.
            report(task_kwargs["task_id"], "cancelled", node.name())
            return
        data = error_data(exception, node.name())
        data["retries"] = int(getattr(sender.request, "retries", 0) or 0)
        report(task_kwargs["task_id"], "failed", node.name(), data)


_heartbeat: Any = None


@signals.worker_ready.connect
def start_heartbeat(**_: Any) -> None:
    """A node worker announces itself while it runs (the scheduler's worker is no node)."""
    global _heartbeat
    if not node.name():
        return
    from workers.handlers.blocks import capacity_blocks
    from workers.heartbeat import Heartbeat

    _heartbeat = Heartbeat(node.name(), {"data_dir": str(node.data_dir()), "capacity_blocks": capacity_blocks()})
    _heartbeat.start()


@signals.worker_shutdown.connect
def stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.worker_init.connect
def take_back_unacked(sender: Any = None, **_: Any) -> None:
    """Before consuming, requeue what this node's previous worker left half done (workers.redelivery)."""
    if not node.name() or sender is None:
        return
    from workers.redelivery import restore_unacked

    restore_unacked(sender.app, node.name())
