"""Retry backoff, computed here and nowhere else: automatic retries of a handler, a node's report
through a Redis outage, a writer waiting for its database or Redis to come back; and retry_for, the
bounded retry of one call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from celery.utils.time import get_exponential_backoff_interval

T = TypeVar("T")


def backoff_seconds(retries: int, *, base: float, cap: float, jitter: bool = False) -> float:
    """base, 2*base, 4*base ... capped at `cap`. With `jitter`, a random point below that (full
    jitter), so many waiters do not come back at the same moment. Celery's own helper, which
    works in whole seconds; sub-second bases are scaled so that 0.2 s stays 0.2 s."""
    scale = 1000.0
    millis = get_exponential_backoff_interval(
        factor=int(base * scale), retries=retries, maximum=int(cap * scale), full_jitter=jitter
    )
    return float(millis) / scale


def retry_for(
    call: Callable[[], T],
    *,
    seconds: float,
    base: float,
    cap: float,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    first_failure: Callable[[BaseException], None] | None = None,
) -> T:
    """call() until it returns, trying again after what raises `retry_on`, with backoff (full jitter), for
    up to `seconds`: the failure after which the next wait would pass that is raised. `first_failure` is
    told of the first one (a log line, not one per try)."""
    deadline = time.monotonic() + seconds
    failures = 0
    while True:
        try:
            return call()
        except retry_on as exc:
            delay = backoff_seconds(failures, base=base, cap=cap, jitter=True)
            failures += 1
            if time.monotonic() + delay > deadline:
                raise
            if failures == 1 and first_failure is not None:
                first_failure(exc)
            time.sleep(delay)
