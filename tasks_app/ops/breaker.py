"""Circuit breakers for the best-effort Redis and broker calls on a request's path: counting a metric,
publishing an executed task after its commit (and, with the same mechanism, for the web's database
pool: tasks_app/postgres/base.py). During an outage each of those calls would pay the
connect or socket timeout again and hold a web worker that long, on every request. After a failure, a
breaker skips its calls for TASKHUB_REDIS_BREAKER_SECONDS, then lets one call through to try again (the
others keep skipping until that one succeeds or fails).

What is skipped is made up for elsewhere or knowingly lost: a skipped publish is the sweep's
(tasks_app/tasks/dispatch.py), a skipped count is lost (metrics are best-effort). Never for calls whose
failure the client must hear about (/task_update's 503) or that report on Redis itself (/healthz).

Per process, and per Redis server (server_of: the metrics and the broker are usually the same one, and
learn of its outage together); a test or a setting pointing one caller at a dead Redis must not silence
another that is up."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import kombu.exceptions
import redis
from django.conf import settings


def is_outage(exc: BaseException) -> bool:
    """Whether an error says the server is unreachable or silent (what opens a breaker), rather than that
    it refused this one command (a wrong type, say: the next call may well succeed)."""
    # kombu's OperationalError is what a publish raises when it cannot reach the broker.
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, kombu.exceptions.OperationalError))


def server_of(url: str) -> str:
    """host:port of a redis:// URL (its database number and password left out); any other URL whole."""
    try:
        parts = urlsplit(url)
        if parts.hostname and parts.scheme in ("redis", "rediss"):
            return f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        pass
    return url


class Breaker:
    def __init__(self, seconds_setting: str) -> None:
        self._seconds_setting = seconds_setting  # how long it stays open: a setting, read at each failure
        self._lock = threading.Lock()
        self._open_until: dict[str, float] = {}  # target -> monotonic time; absent: closed

    def allows(self, target: str) -> bool:
        """True if a call to `target` should be tried now. While open, False; once the wait is over,
        True for one caller (the others wait another round for its outcome)."""
        with self._lock:
            until = self._open_until.get(target)
            if until is None:
                return True
            now = time.monotonic()
            if now < until:
                return False
            self._open_until[target] = now + self._seconds()
            return True

    def failed(self, target: str) -> None:
        with self._lock:
            self._open_until[target] = time.monotonic() + self._seconds()

    def succeeded(self, target: str) -> None:
        if target in self._open_until:  # the common case, closed, takes no lock
            with self._lock:
                self._open_until.pop(target, None)

    def is_open(self, target: str) -> bool:
        return target in self._open_until

    def _seconds(self) -> float:
        return float(getattr(settings, self._seconds_setting))


# The one breaker of this process for the Redis servers behind REDIS_URL and CELERY_BROKER_URL.
redis_breaker = Breaker("TASKHUB_REDIS_BREAKER_SECONDS")
# The one breaker of this process for its database pool (target: the database alias).
database_breaker = Breaker("TASKHUB_DB_BREAKER_SECONDS")
