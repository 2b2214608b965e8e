"""The Celery tasks. Thin: the work is in workers.runner and the handlers; queues in workers.routing."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from workers import fanout, node, runner
from workers.queues import EXECUTE_PART_TASK, EXECUTE_TASK, SWEEP_TASK


# acks_late + reject_on_worker_lost: a worker killed mid-task leaves the message unacknowledged,
# and the broker hands it out again; workers.guard makes the re-run safe.
@shared_task(name=EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute(*, task_id: str, task_type: str, task_data: dict[str, Any], node: str, attempt: int = 0) -> dict[str, Any]:
    return runner.run_task(task_id=task_id, task_type=task_type, task_data=task_data, attempt=attempt)


@shared_task(name=EXECUTE_PART_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_part(
    *, task_id: str, task_type: str, payload: dict[str, Any], node: str, attempt: int, reply_key: str
) -> None:
    answer = fanout.answer_for(
        lambda: runner.run_part(task_id=task_id, task_type=task_type, payload=payload, attempt=attempt)
    )
    fanout.send_answer(reply_key, _this_node(), answer)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep_undelivered() -> int:
    """Runs on the scheduler (beat): publish executable tasks whose publish never happened."""
    from tasks_app.dispatch import sweep

    return sweep()


def _this_node() -> str:
    return node.name()
