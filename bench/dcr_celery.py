"""(d)'s second peer: what a Django user picks today, Celery with django-celery-results.

A Celery app whose result backend is `django-db` (django-celery-results' TaskResult table) with
`task_track_started`, so every task writes its row twice, STARTED when a worker begins it and
SUCCESS when it ends: the nearest thing in the Celery world to taskhub's tracked task. Its worker
runs under bench/settings_dcr.py, which keeps the table in the schema SCHEMA of the bench
database, beside taskhub's tables and apart from them. Broker settings as bench.bare_celery's.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from bench.bare_celery import BROKER_URL, RELIABLE

SCHEMA = "bench_dcr"
QUEUE_PREFIX = "bench.dcr"
TASK = "bench.dcr.noop"
TABLE = f"{SCHEMA}.django_celery_results_taskresult"
# Its worker's PostgreSQL connections say so, so that the bench charges their CPU to this peer alone.
APPLICATION_NAME = "bench-dcr"

# set_as_current=False: as in bench.bare_celery, taskhub's app stays the bench process's current one.
# The bench process only sends with this app; its backend is used in the worker, where Celery's Django
# fixup (DJANGO_SETTINGS_MODULE=bench.settings_dcr) sets Django up and closes connections per task
# as CONN_MAX_AGE says.
app = Celery("bench_dcr", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    **RELIABLE,
    result_serializer="json",
    result_backend="django-db",
    task_track_started=True,
    task_default_queue=QUEUE_PREFIX,
)


@app.task(name=TASK)
def noop(**kwargs: Any) -> None:
    """Takes the same keyword arguments taskhub.execute does; its STARTED and SUCCESS rows are the work."""
