"""The Celery tasks a node runs. Thin: the work is in workers/node/runner.py and the families; queues
in workers/protocol/queues.py. The Celery id of taskhub.execute is the run id."""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery import Task, shared_task
from celery.exceptions import Reject
from django.conf import settings

from workers.node import fanout, identity, runner
from workers.node.reporter import error_data, report
from workers.protocol import specs
from workers.protocol.backoff import backoff_seconds, retry_for
from workers.protocol.errors import FanOutFailed, HandlerError, RecoverableError
from workers.protocol.queues import EXECUTE_PART_TASK, EXECUTE_TASK

log = logging.getLogger(__name__)

# An automatic retry is a new message to the broker. Celery publishes it under its own retry policy (by
# default 3 more tries within about 0.6 s: task_publish_retry_policy, which settings_shared.py leaves
# alone), then raises Reject(requeue=False) and the worker drops this message. A Reject fires neither
# task_failure nor task_success, so the run would report no outcome and stay held (workers/node/running.py)
# until the worker restarts. So a refused retry is tried again for up to this long (a Sentinel failover, a
# moment of OOM), and then the run fails (RetryNotScheduled): that report reaches the server through the
# outbox whatever the broker does, and the server's own retry policy applies to it as to any failure.
RETRY_PUBLISH_SECONDS = 10.0
RETRY_PUBLISH_BACKOFF_BASE_SECONDS, RETRY_PUBLISH_BACKOFF_CAP_SECONDS = 0.5, 4.0


class RetryNotScheduled(HandlerError):
    """A recoverable failure whose automatic retry the broker would not take: the run fails with it."""


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
        _retry(self, exc, countdown=delay, limit=limit)


def _retry(task: Task[Any, Any], exc: HandlerError, *, countdown: float, limit: int) -> NoReturn:
    """task.retry(): raises Retry once the retry's message is with the broker, due `countdown` seconds
    after this call; RetryNotScheduled if the broker refused it for RETRY_PUBLISH_SECONDS."""
    started = time.monotonic()
    tries = 0

    def publish() -> NoReturn:
        nonlocal tries
        tries += 1
        # Due when the run's `retry` report said, however long the broker took to take it.
        due = max(0.0, countdown - (time.monotonic() - started))
        raise task.retry(exc=exc, countdown=due, max_retries=limit) from exc

    try:
        retry_for(
            publish, seconds=RETRY_PUBLISH_SECONDS, base=RETRY_PUBLISH_BACKOFF_BASE_SECONDS,
            cap=RETRY_PUBLISH_BACKOFF_CAP_SECONDS, retry_on=Reject,
            first_failure=lambda refused: log.warning(
                "the broker refused the retry of run %s: %s; trying again", task.request.id, _why(refused)
            ),
        )  # fmt: skip
    except Reject as refused:
        raise _not_scheduled(exc, _why(refused), tries) from exc
    raise AssertionError("task.retry() returned")  # it raises Retry once the broker has the message


def _why(refused: BaseException) -> object:
    return getattr(refused, "reason", refused)  # what apply_async raised


def _not_scheduled(exc: HandlerError, why: object, tries: int) -> RetryNotScheduled:
    """The run's failure: the handler's error, and why its retry could not be sent. The handler's details
    stay (a fan-out's per-node answers), so the report reads as the failure it would otherwise have been."""
    details = {
        **exc.details,
        "cause": {"type": type(exc).__name__, "message": str(exc)},
        "retry_refused": f"{type(why).__name__}: {why}",
        "tries": tries,
    }
    message = f"{type(exc).__name__}: {exc}; its automatic retry could not be scheduled (the broker refused it: {why})"
    return RetryNotScheduled(message, details)


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
