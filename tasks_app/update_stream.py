"""The status-update stream in Redis (the seed's Figure 1): producers append, writers apply.

Updates are spread over TASKHUB_STREAM_SHARDS streams by a stable hash of the task_id, so all
updates of one task land in one shard, in the order they were sent.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import redis
from django.conf import settings

from tasks_app.errors import UpdateQueueUnavailable
from tasks_app.status import is_valid_status
from tasks_app.transitions import StatusUpdate


@dataclass(frozen=True)
class Heartbeat:
    node: str
    at: float  # epoch seconds, as the node saw it
    info: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    stream_id: str
    update: StatusUpdate | None = None
    heartbeat: Heartbeat | None = None  # neither: an entry we cannot read, skipped by the writer


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    # Short timeouts: an API call that cannot queue its update should fail fast with a 503.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def shard_count() -> int:
    return int(settings.TASKHUB_STREAM_SHARDS)


def shard_for(task_id: str) -> int:
    return zlib.crc32(task_id.encode()) % shard_count()


def stream_key(shard: int) -> str:
    return f"{settings.TASKHUB_STREAM_PREFIX}:{shard}"


def push(update: StatusUpdate) -> str:
    """Append one update. Returns its stream id; raises UpdateQueueUnavailable if Redis can't take it."""
    fields: dict[Any, Any] = {"task_id": update.task_id, "status": update.status, "source": update.source}
    if update.status_data is not None:
        fields["data"] = json.dumps(update.status_data, separators=(",", ":"))
    try:
        stream_id = client().xadd(stream_key(shard_for(update.task_id)), fields)
    except redis.RedisError as exc:
        raise UpdateQueueUnavailable(f"Task update could not be queued: {exc}") from exc
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def push_heartbeat(node: str, info: dict[str, Any]) -> str:
    """A node is alive; the writers record it on the Node row (nodes never open the database)."""
    fields = {"kind": "heartbeat", "node": node, "at": repr(time.time()), "data": json.dumps(info)}
    stream_id = client().xadd(stream_key(shard_for(node)), fields)  # type: ignore[arg-type]
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def read_after(shard: int, last_id: str, count: int) -> list[Entry]:
    """Entries of a shard strictly after last_id, oldest first."""
    raw = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client().xrange(stream_key(shard), min=f"({last_id}", max="+", count=count),
    )
    return [_decode(sid, fields) for sid, fields in raw]


def wait_for_any(last_ids: dict[int, str], block_ms: int) -> bool:
    """Block until some shard has an entry after its last applied id; True if one arrived."""
    streams = {stream_key(shard): last_id for shard, last_id in last_ids.items()}
    return bool(client().xread(streams, count=1, block=block_ms))  # type: ignore[arg-type]


def trim_upto(shard: int, last_id: str) -> None:
    """Drop entries up to and including last_id; they are committed to the database."""
    ms, seq = (int(p) for p in last_id.split("-"))
    client().xtrim(stream_key(shard), minid=f"{ms}-{seq + 1}", approximate=False)


def backlog() -> int:
    """Entries in Redis over all shards: the ones not yet applied, plus any applied batch whose
    trim was cut short by a writer dying right after its commit (the next batch trims those)."""
    pipe = client().pipeline(transaction=False)
    for shard in range(shard_count()):
        pipe.xlen(stream_key(shard))
    lengths: list[int] = pipe.execute()  # type: ignore[no-untyped-call]
    return sum(lengths)


def _decode(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    try:
        data = fields.get(b"data")
        if fields.get(b"kind") == b"heartbeat":
            info = json.loads(data) if data is not None else {}
            # Redis's clock (the entry id), not the node's: a node with a slow clock is not "dead".
            beat = Heartbeat(node=fields[b"node"].decode(), at=int(sid.split("-")[0]) / 1000, info=info)
            return Entry(stream_id=sid, heartbeat=beat if isinstance(info, dict) else None)
        status = fields[b"status"].decode()
        status_data = json.loads(data) if data is not None else None
        if not is_valid_status(status) or not (status_data is None or isinstance(status_data, dict)):
            raise ValueError("not a status update")
        update = StatusUpdate(
            task_id=fields[b"task_id"].decode(),
            status=status,
            status_data=status_data,
            source=fields.get(b"source", b"").decode(),
        )
    except (KeyError, UnicodeDecodeError, ValueError):
        # Written by something other than push(); a poison entry must not stop the writers.
        return Entry(stream_id=sid)
    return Entry(stream_id=sid, update=update)
