"""The Redis client both sides use for the update stream and the run keys (Celery has its own)."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    # Short timeouts: an API call that cannot queue its update should fail fast with a 503, and a
    # node's report path retries on its own (workers/node/reporter.py).
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)
