"""A node worker that starts takes back what its previous incarnation left unacknowledged.

One worker consumes a node's queue. With late acknowledgement, the messages a killed worker was
running stay in the broker's "unacked" set until the visibility timeout passes, and kombu then
restores them only every tenth check (about every 100 s). Nothing else could be running them, so
at start-up the worker puts them straight back on its queue.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from workers.protocol.queues import node_queue

log = logging.getLogger(__name__)


def restore_unacked(app: Any, node: str) -> int:
    """Requeue (at the front) every unacknowledged message routed to this node's queue."""
    queue = node_queue(node)
    restored = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "unacked_key"):
            return 0  # not the Redis transport
        for tag, raw in channel.client.hgetall(channel.unacked_key).items():
            try:
                _message, _exchange, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                continue
            if routing_key == queue:
                channel.qos.restore_by_tag(tag, leftmost=True)
                restored += 1
    if restored:
        log.warning("node %s: requeued %s message(s) a previous worker left unacknowledged", node, restored)
    return restored
