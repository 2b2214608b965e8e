"""Appending to the update stream. Both sides write it (the API's /task_update, the nodes' reports
and heartbeats); only the server's writers read it (tasks_app/tasks/stream.py)."""

from __future__ import annotations

from typing import Any

from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.messages import StatusUpdate, encode_heartbeat, encode_update


def _sid(stream_id: Any) -> str:
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def push_update(update: StatusUpdate) -> str:
    """Append one status update to its task's shard. Returns the stream id; raises redis.RedisError."""
    fields: Any = encode_update(update)
    return _sid(client().xadd(keys.stream_key(keys.shard_for(update.task_id)), fields))


def push_heartbeat(node: str, info: dict[str, Any]) -> str:
    """A node is alive; the writers record it on the Node row (nodes never open the database)."""
    fields: Any = encode_heartbeat(node, info)
    return _sid(client().xadd(keys.stream_key(keys.shard_for(node)), fields))
