"""Celery signal receivers: a node's reports on each run go to the update stream, through the writers
and the one transition function. Only taskhub.execute reports; its parts answer their initiator.
Every report names its run (the message's run_id, which is also its Celery id).

No receiver calls Redis: a report goes to the node's outbox on disk (workers/node/reporter.py), and the
sender thread does every Redis call on the report path inside its retry. An outage while a receiver
runs can neither raise out of it nor lose the report, even though the message is then acknowledged."""

from __future__ import annotations

from typing import Any

from celery import signals

from workers.node import identity, running
from workers.node.reporter import cancel_data, error_data, report
from workers.protocol.errors import Cancelled, Superseded
from workers.protocol.queues import EXECUTE_TASK, TASK_ID_HEADER


def _ours(task: Any) -> bool:
    return getattr(task, "name", None) == EXECUTE_TASK


@signals.task_received.connect
def on_received(request: Any = None, **_: Any) -> None:
    if request is not None and request.name == EXECUTE_TASK:
        kwargs = request.kwargs
        # Held from here (before its first report) until its outcome is in the outbox: the heartbeat
        # lists it all along (workers/node/running.py), a message waiting for a slot or its retry too.
        running.hold(kwargs["run_id"])
        report(kwargs["task_id"], kwargs["run_id"], "received", identity.name())


@signals.task_prerun.connect
def on_start(sender: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if _ours(sender) and kwargs:
        data = {"node": identity.name(), "attempt": kwargs.get("attempt", 0)}
        report(kwargs["task_id"], kwargs["run_id"], "in_progress", identity.name(), data)


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if _ours(sender):
        kwargs = sender.request.kwargs
        data = result if isinstance(result, dict) else {"result": result}
        try:
            report(kwargs["task_id"], kwargs["run_id"], "completed", identity.name(), {**data, "node": identity.name()})
        finally:
            running.release(kwargs["run_id"])  # its outcome is in the outbox


@signals.task_failure.connect
def on_failure(sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any) -> None:
    if not _ours(sender) or exception is None:
        return
    task_kwargs = kwargs or sender.request.kwargs
    try:
        if isinstance(exception, Superseded):
            return  # the server ended this run itself; another run may be under way
        here = identity.name()
        if isinstance(exception, Cancelled):
            report(task_kwargs["task_id"], task_kwargs["run_id"], "cancelled", here, cancel_data(exception, here))
            return
        data = error_data(exception, here)
        data["retries"] = int(getattr(sender.request, "retries", 0) or 0)
        report(task_kwargs["task_id"], task_kwargs["run_id"], "failed", here, data)
    finally:
        running.release(task_kwargs["run_id"])  # its outcome is in the outbox, or it has none to send


@signals.task_revoked.connect
def on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A cancelled run's message dropped before it started (Celery's revoke): the node confirms the
    cancel, so the task leaves `cancelling`. A voided run reports nothing (the reporter checks)."""
    if not _ours(sender) or request is None:
        return
    task_id, run_id = getattr(request, TASK_ID_HEADER, None), getattr(request, "id", None)
    if task_id and run_id:
        here = identity.name()
        data = {"node": here, "cancelled": {"message": "revoked before it started", "stopped": "before it started"}}
        try:
            report(str(task_id), str(run_id), "cancelled", here, data)
        finally:
            running.release(str(run_id))


_heartbeat: Any = None


@signals.worker_ready.connect
def start_heartbeat(**_: Any) -> None:
    """A node worker announces itself while it runs, sends what a previous worker left in the outbox
    (and every report from now on), and drops ledger entries that have expired."""
    global _heartbeat
    if not identity.name():
        return
    from workers.families.blocks import capacity_blocks
    from workers.node import sender
    from workers.node.guard import prune
    from workers.node.heartbeat import Heartbeat
    from workers.protocol.keys import run_state_ttl

    sender.running(identity.state_dir())
    prune(identity.state_dir(), run_state_ttl())
    _heartbeat = Heartbeat(
        identity.name(),
        {"data_dir": str(identity.data_dir()), "capacity_blocks": capacity_blocks()},
        state_dir=identity.state_dir(),  # its beats list the runs it holds and has yet to deliver
    )
    _heartbeat.start()


@signals.worker_shutdown.connect
def stop_heartbeat(**_: Any) -> None:
    from workers.node import sender

    if _heartbeat is not None:
        _heartbeat.stop()
    sender.stop_all()  # a last delivery, bounded; what Redis does not take waits on disk


@signals.worker_init.connect
def take_back_unacked(sender: Any = None, **_: Any) -> None:
    """Before consuming, requeue what this node's previous worker left half done (workers/node/redelivery.py)."""
    if not identity.name() or sender is None:
        return
    from workers.node.redelivery import restore_unacked

    restore_unacked(sender.app, identity.name())
