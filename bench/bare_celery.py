"""(d)'s first peer: a bare Celery app with one task that INCRs a Redis counter, nothing else.

The bench runs one worker of it per pool it compares (bench.peers.POOLS: prefork, threads,
solo), each on its own queue `bench.bare.<pool>`, and names the fastest the peer. The broker is
the bench's Redis (CELERY_BROKER_URL, as for taskhub's own workers). Every configuration is as
reliable as taskhub's node workers: JSON, late acknowledgement with reject_on_worker_lost (a
message is taken off the queue only after its task ran), taskhub's visibility timeout, and the
prefetch multiplier taskhub's app runs with (4); no result backend. No Django here.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/14"
QUEUE_PREFIX = "bench.bare"
TASK = "bench.bare.noop"
PREFETCH = 4  # taskhub's CELERY_WORKER_PREFETCH_MULTIPLIER default (taskhub/settings_shared.py)
# Under the bench's key prefix (config.STREAM_PREFIX's parent), deleted by the bench afterwards.
COUNTER = "taskhub-bench:bare:done"

# set_as_current=False: the bench process also holds taskhub's app, which dispatch.publish finds
# as celery.current_app; this app must not take its place.
# The reliable setup every peer shares (bench.dcr_celery too): JSON, late acknowledgement that a lost
# worker gives back, taskhub's prefetch and visibility timeout.
RELIABLE: dict[str, Any] = {
    "task_serializer": "json",
    "accept_content": ["json"],
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": PREFETCH,
    "broker_transport_options": {"visibility_timeout": int(os.environ.get("TASKHUB_REDELIVERY_SECONDS") or 3600)},
    "broker_connection_retry_on_startup": True,
}

app = Celery("bench_bare", broker=BROKER_URL, set_as_current=False)
app.conf.update(**RELIABLE, task_ignore_result=True, task_default_queue=QUEUE_PREFIX)

_counter = redis.Redis.from_url(BROKER_URL)


@app.task(name=TASK)
def noop(**kwargs: Any) -> None:
    """Takes the same keyword arguments taskhub.execute does, and only counts itself done."""
    _counter.incr(COUNTER)
