"""Slots: a bounded number of requests of one kind that may hold a server thread at once, per process.

Long polls (tasks_app/api/longpoll.py) and event streams (tasks_app/api/events.py) each hold a gunicorn
thread for a long time. A slot is taken without blocking: a request that finds none free is refused at
once (a 429 with Retry-After) rather than queued where nobody can see it.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
# One semaphore per kind and limit, so a changed limit (tests' override_settings) takes effect while the
# requests holding the old one still give theirs back into it.
_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _semaphore(kind: str, limit: int) -> threading.BoundedSemaphore:
    with _lock:
        sem = _semaphores.get((kind, limit))
        if sem is None:
            sem = _semaphores[(kind, limit)] = threading.BoundedSemaphore(limit)
        return sem


def take(kind: str, limit: int) -> bool:
    """Take one of `limit` slots of `kind`; False if all are taken."""
    return _semaphore(kind, limit).acquire(blocking=False)


def give(kind: str, limit: int) -> None:
    """Give back a slot taken with the same kind and limit."""
    _semaphore(kind, limit).release()
