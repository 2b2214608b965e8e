"""Node heartbeats: a key with a TTL that peers read (is node X up?), and a stream entry that the
writers turn into Node.last_heartbeat for the server."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings

from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.stream import push_heartbeat

log = logging.getLogger(__name__)


def beat(node: str, info: dict[str, Any]) -> None:
    ttl = max(1, int(settings.TASKHUB_NODE_OFFLINE_SECONDS))
    client().set(keys.alive_key(node), json.dumps({"ts": time.time(), **info}), ex=ttl)
    push_heartbeat(node, info)


def forget(node: str) -> None:
    client().delete(keys.alive_key(node))


class Heartbeat(threading.Thread):
    """Beats every TASKHUB_HEARTBEAT_SECONDS until stopped; survives Redis outages."""

    def __init__(self, node: str, info: dict[str, Any]) -> None:
        super().__init__(name=f"heartbeat-{node}", daemon=True)
        self.node, self.info = node, info
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                beat(self.node, self.info)
            except redis.RedisError as exc:
                log.warning("heartbeat of %s failed: %s", self.node, exc)
            self._stop_event.wait(float(settings.TASKHUB_HEARTBEAT_SECONDS))

    def stop(self) -> None:
        self._stop_event.set()
        with contextlib.suppress(redis.RedisError):
            forget(self.node)
