"""Whether a node is alive: its heartbeat key, which the node sets with a time to live
(workers/node/heartbeat.py). Fan-out asks it of its peers; the dead-node sweep asks it before it
takes a silent node's tasks away (the writers may only be behind)."""

from __future__ import annotations

from workers.protocol import keys
from workers.protocol.connection import client


def alive(node: str) -> bool:
    return bool(client().exists(keys.alive_key(node)))
