"""Slots for long polls (GET /api/v1/tasks/<id>/?wait=): a bounded number per server process.

A long poll holds its gunicorn thread for the whole wait. Without a bound, a few watchers would take every
thread of a process and stall the requests that return at once (`GET /tasks`, task creates). A slot is
taken without blocking: a client with no slot free gets a 429 with Retry-After at once, rather than a
queue nobody can see.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection
from rest_framework.exceptions import Throttled

from tasks_app.api import slots
from tasks_app.errors import InvalidInput

MAX_WAIT_SECONDS = 60.0
# A wait that found no slot is worth retrying soon: other long polls end as soon as their task changes.
RETRY_AFTER_SECONDS = 2


class LongPollBusy(Throttled):
    """Every long-poll slot of this process is taken: a 429 with Retry-After (DRF's handler sets it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            wait=RETRY_AFTER_SECONDS,
            detail=(
                f"All {limit} long-poll slots of this server process are in use (TASKHUB_LONGPOLL_SLOTS); "
                "retry after Retry-After seconds, or GET without ?wait."
            ),
        )


def wait_seconds(raw: str) -> float:
    """The `wait` query parameter, checked."""
    try:
        seconds = float(raw)
    except ValueError as exc:
        raise InvalidInput("'wait' must be a number of seconds") from exc
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise InvalidInput(f"'wait' must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    return seconds


def pause(seconds: float) -> None:
    """The wait between a long poll's reads. With a connection pool (the web under gunicorn.conf.py) the
    connection goes back to the pool for the wait, so waiting polls do not hold the pool's connections
    (each read takes one again, without a new login); with none, the thread keeps its connection."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()
    time.sleep(seconds)


@contextmanager
def slot() -> Iterator[None]:
    """Hold one long-poll slot for the body of the `with`; raises LongPollBusy if none is free."""
    limit = max(1, int(settings.TASKHUB_LONGPOLL_SLOTS))
    if not slots.take("longpoll", limit):
        raise LongPollBusy(limit)
    try:
        yield
    finally:
        slots.give("longpoll", limit)
