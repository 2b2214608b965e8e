"""Retry backoff, computed here and nowhere else: automatic retries of a handler, a node's report
through a Redis outage, a writer waiting for its database or Redis to come back."""

from __future__ import annotations

from celery.utils.time import get_exponential_backoff_interval


def backoff_seconds(retries: int, *, base: float, cap: float, jitter: bool = False) -> float:
    """base, 2*base, 4*base ... capped at `cap`. With `jitter`, a random point below that (full
    jitter), so many waiters do not come back at the same moment. Celery's own helper, which
    works in whole seconds; sub-second bases are scaled so that 0.2 s stays 0.2 s."""
    scale = 1000.0
    millis = get_exponential_backoff_interval(
        factor=int(base * scale), retries=retries, maximum=int(cap * scale), full_jitter=jitter
    )
    return float(millis) / scale
