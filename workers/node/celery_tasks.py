"""The Celery tasks a node runs. Thin: the work is in workers/node/runner.py and the families; queues
in workers/protocol/queues.py. The Celery id of taskhub.execute is the run id."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from workers.node import fanout, identity, runner
from workers.node.reporter import error_data, report
from workers.protocol import specs
from workers.protocol.backoff import backoff_seconds
from workers.protocol.errors import FanOutFailed, RecoverableError
from workers.protocol.queues import EXECUTE_PART_TASK, EXECUTE_TASK


# acks_late + reject_on_worker_lost: a worker killed mid-task leaves the message unacknowledged,
# and the broker hands it out again; workers/node/guard.py makes the re-run safe.
@shared_task(bind=True, name=EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute(
    self: Task[Any, Any],
    *,
    task_id: str,
    run_id: str,
    task_type: str,
    task_data: dict[str, Any],
    node: str,
    attempt: int = 0,
) -> dict[str, Any]:
    spec = specs.get(task_type)
    limit = spec.retry_limit() if spec is not None else 0
    retries = int(self.request.retries or 0)
    try:
        return runner.run_task(
            task_id=task_id, run_id=run_id, task_type=task_type, task_data=task_data, attempt=attempt,
            retries=retries, final=retries >= limit,
        )  # fmt: skip
    except (RecoverableError, FanOutFailed) as exc:
        recoverable = isinstance(exc, RecoverableError) or (isinstance(exc, FanOutFailed) and exc.recoverable)
        if not recoverable or retries >= limit:
            raise
        delay = backoff_seconds(
            retries,
            base=float(settings.TASKHUB_RETRY_BACKOFF_SECONDS),
            cap=float(settings.TASKHUB_RETRY_BACKOFF_MAX_SECONDS),
        )
        here = identity.name()
        waiting = {"attempt": retries + 1, "of": limit, "in_seconds": delay, **error_data(exc, here)}
        report(task_id, run_id, "in_progress", here, {"node": here, "retry": waiting})
        raise self.retry(exc=exc, countdown=delay, max_retries=limit) from exc


@shared_task(name=EXECUTE_PART_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_part(
    *,
    task_id: str,
    run_id: str,
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
            task_id=task_id, run_id=run_id, task_type=task_type, payload=payload, attempt=attempt, retries=retries,
            mode=mode,
        )
    )  # fmt: skip
    fanout.send_answer(reply_key, identity.name(), answer)
