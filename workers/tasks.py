"""The Celery tasks. Thin: the work is in workers.runner and the handlers; queues in workers.routing."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from workers import fanout, node, registry, runner
from workers.errors import FanOutFailed, RecoverableError
from workers.queues import DEAD_NODES_TASK, EXECUTE_PART_TASK, EXECUTE_TASK, PURGE_TASK, SWEEP_TASK
from workers.reporter import error_data, report


def backoff_seconds(retries: int) -> float:
    """Exponential: base, 2*base, 4*base ... capped."""
    base = float(settings.TASKHUB_RETRY_BACKOFF_SECONDS)
    return float(min(base * (2**retries), float(settings.TASKHUB_RETRY_BACKOFF_MAX_SECONDS)))


# acks_late + reject_on_worker_lost: a worker killed mid-task leaves the message unacknowledged,
# and the broker hands it out again; workers.guard makes the re-run safe.
@shared_task(bind=True, name=EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute(
    self: Task[Any, Any], *, task_id: str, task_type: str, task_data: dict[str, Any], node: str, attempt: int = 0
) -> dict[str, Any]:
    ttype = registry.get(task_type)
    limit = ttype.retry_limit() if ttype is not None else 0
    retries = int(self.request.retries or 0)
    try:
        return runner.run_task(
            task_id=task_id, task_type=task_type, task_data=task_data, attempt=attempt, retries=retries,
            final=retries >= limit,
        )  # fmt: skip
    except (RecoverableError, FanOutFailed) as exc:
        recoverable = isinstance(exc, RecoverableError) or (isinstance(exc, FanOutFailed) and exc.recoverable)
        if not recoverable or retries >= limit:
            raise
        delay = backoff_seconds(retries)
        waiting = {"attempt": retries + 1, "of": limit, "in_seconds": delay, **error_data(exc, _this_node())}
        report(task_id, "in_progress", _this_node(), {"node": _this_node(), "retry": waiting})
        raise self.retry(exc=exc, countdown=delay, max_retries=limit) from exc


@shared_task(name=EXECUTE_PART_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_part(
    *,
    task_id: str,
    task_type: str,
    payload: dict[str, Any],
    node: str,
    attempt: int,
    reply_key: str,
    retries: int = 0,
    mode: str = "part",
) -> None:
    answer = fanout.answer_for(
        lambda: runner.run_part(
            task_id=task_id, task_type=task_type, payload=payload, attempt=attempt, retries=retries, mode=mode
        )
    )
    fanout.send_answer(reply_key, _this_node(), answer)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep_undelivered() -> int:
    """Runs on the scheduler (beat): publish executable tasks whose publish never happened."""
    from tasks_app.dispatch import sweep

    return sweep()


@shared_task(name=DEAD_NODES_TASK, ignore_result=True)
def sweep_dead_nodes() -> int:
    """Runs on the scheduler (beat): nodes silent too long go offline; their tasks fail or move."""
    from tasks_app.node_health import sweep_dead_nodes as sweep

    return int(sweep())


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_finished() -> int:
    """Runs on the scheduler (beat): delete finished tasks older than TASKHUB_RETENTION_DAYS, in bounded batches."""
    from tasks_app.retention import purge_finished as purge

    return purge().purged


def _this_node() -> str:
    return node.name()
