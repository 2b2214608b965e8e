"""Celery signal receivers: a node's task status goes to the update stream, through the writers and
the one transition function. Only taskhub.execute reports; its parts answer their initiator."""

from __future__ import annotations

from typing import Any

from celery import signals

from workers import node
from workers.queues import EXECUTE_TASK
from workers.reporter import error_data, report


def _ours(task: Any) -> bool:
    return getattr(task, "name", None) == EXECUTE_TASK


@signals.task_received.connect
def on_received(request: Any = None, **_: Any) -> None:
    if request is not None and request.name == EXECUTE_TASK:
        report(request.kwargs["task_id"], "received", node.name())


@signals.task_prerun.connect
def on_start(sender: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if _ours(sender) and kwargs:
        data = {"node": node.name(), "attempt": kwargs.get("attempt", 0)}
        report(kwargs["task_id"], "in_progress", node.name(), data)


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if _ours(sender):
        data = result if isinstance(result, dict) else {"result": result}
        report(sender.request.kwargs["task_id"], "completed", node.name(), {**data, "node": node.name()})


@signals.task_failure.connect
def on_failure(sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any) -> None:
    if _ours(sender) and exception is not None:
        task_kwargs = kwargs or sender.request.kwargs
        report(task_kwargs["task_id"], "failed", node.name(), error_data(exception, node.name()))


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
