"""The scheduler's Celery tasks (CELERY_BEAT_SCHEDULE), run by `manage.py run_scheduler` on the server
queue. Thin: each calls the service that does the work."""

from __future__ import annotations

from celery import shared_task

from workers.protocol.queues import DEAD_NODES_TASK, PURGE_TASK, STALLED_RUNS_TASK, SWEEP_TASK


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep_undelivered() -> int:
    """Publish executed tasks whose publish never happened."""
    from tasks_app.tasks.dispatch import sweep

    return sweep()


@shared_task(name=DEAD_NODES_TASK, ignore_result=True)
def sweep_dead_nodes() -> int:
    """Nodes silent too long go offline; their tasks fail or move."""
    from tasks_app.fleet.health import sweep_dead_nodes as sweep

    return int(sweep())


@shared_task(name=STALLED_RUNS_TASK, ignore_result=True)
def sweep_stalled_runs() -> int:
    """Runs a live node no longer has: their node is asked how they ended, and those it has no outcome for
    fail (and are retried where allowed); runs past their type's timeout fail. Returns how many it dealt with."""
    from tasks_app.fleet.stalled import sweep_stalled_runs as sweep

    result = sweep()
    return result.asked + result.failed + result.timed_out


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_finished() -> int:
    """Delete finished tasks older than TASKHUB_RETENTION_DAYS, in bounded batches."""
    from tasks_app.ops.retention import purge_finished as purge

    return purge().purged
