"""Node heartbeats: a key with a TTL that peers read (is node X up?), and a stream entry that the
writers turn into Node.last_heartbeat for the server. A worker's heartbeat also lists the runs it holds
and the runs whose reports are still in its outbox (workers/node/running.py), for the server's
stalled-run sweep, and first answers that sweep's questions (workers/node/lifeline.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

from workers.node import lifeline, running
from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.stream import push_heartbeat

log = logging.getLogger(__name__)


def beat(node: str, info: dict[str, Any]) -> None:
    ttl = max(1, int(settings.TASKHUB_NODE_OFFLINE_SECONDS))
    # Peers only ask whether the node is up: its run lists go to the server alone.
    alive = {k: v for k, v in info.items() if k != "runs"}
    client().set(keys.alive_key(node), json.dumps({"ts": time.time(), **alive}), ex=ttl)
    push_heartbeat(node, info)


def forget(node: str) -> None:
    client().delete(keys.alive_key(node))


class Heartbeat(threading.Thread):
    """Beats every TASKHUB_HEARTBEAT_SECONDS until stopped; survives Redis outages. With `state_dir`
    (a node worker's), each beat also carries the worker's runs (running.runs_report)."""

    def __init__(self, node: str, info: dict[str, Any], state_dir: Path | None = None) -> None:
        super().__init__(name=f"heartbeat-{node}", daemon=True)
        self.node, self.info, self.state_dir = node, info, state_dir
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set():
            info = self.info
            if self.state_dir is not None:
                info = {**info, "runs": self._runs(self.state_dir, time.monotonic() - started)}
            try:
                beat(self.node, info)
            except redis.RedisError as exc:
                log.warning("heartbeat of %s failed: %s", self.node, exc)
            self._stop_event.wait(float(settings.TASKHUB_HEARTBEAT_SECONDS))

    def _runs(self, state_dir: Path, listing_for: float) -> dict[str, Any] | None:
        """The beat's runs, after answering the server's questions (a run reported now is in the outbox,
        so this beat lists it). None, and the server judges nothing from this beat, if they cannot be told."""
        try:
            no_outcome = lifeline.answer(self.node, state_dir)
            return running.runs_report(state_dir, listing_for, no_outcome)
        except Exception as exc:  # the beat itself must go out, or the node would count as dead
            log.warning("heartbeat of %s goes without its runs: %s", self.node, exc)
            return None

    def stop(self) -> None:
        self._stop_event.set()
        with contextlib.suppress(redis.RedisError):
            forget(self.node)
