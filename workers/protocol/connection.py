"""The Redis client both sides use for the update stream and the run keys (Celery has its own): of
REDIS_URL, or through Redis Sentinel when that is a sentinel:// URL (workers/protocol/redis_url.py)."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

from workers.protocol import redis_url


@lru_cache(maxsize=16)
def _client(url: str, sentinel_master: str, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    return redis_url.connect(
        url, sentinel_master=sentinel_master, socket_timeout=socket_timeout, connect_timeout=connect_timeout
    )


def client(*, blocking: float = 0.0) -> redis.Redis:
    """The client for REDIS_URL. Every command on it is bounded: TASKHUB_REDIS_CONNECT_TIMEOUT to
    connect, TASKHUB_REDIS_SOCKET_TIMEOUT for each answer (taskhub/settings_shared.py), so that a web
    request meets a dead or frozen Redis with a prompt 503 instead of holding its worker, and a node's or
    a writer's retry loop gets to try again.

    `blocking`: the longest a command on this client waits in Redis on purpose (XREAD BLOCK, BLPOP), in
    seconds; it is added to the socket timeout, so that waiting is never taken for an outage."""
    return _client(
        settings.REDIS_URL,
        settings.TASKHUB_REDIS_SENTINEL_MASTER,
        float(settings.TASKHUB_REDIS_SOCKET_TIMEOUT) + blocking,
        float(settings.TASKHUB_REDIS_CONNECT_TIMEOUT),
    )
