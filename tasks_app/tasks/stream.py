"""The status-update stream in Redis (the seed's Figure 1), the server's side: the API appends
(workers/protocol/stream.py writes, for nodes too), the writers read and trim. Updates are spread over
TASKHUB_STREAM_SHARDS shards by a stable hash of the task_id, so all updates of one task land in one
shard, in the order they were sent.
"""

from __future__ import annotations

from typing import cast

import redis
from django.conf import settings

from tasks_app.errors import UpdateNotReplicated, UpdateQueueUnavailable
from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.messages import Entry, StatusUpdate, decode_entry
from workers.protocol.stream import push_update, push_update_replicated


def push(update: StatusUpdate) -> str:
    """Append one update. Returns its stream id; raises UpdateQueueUnavailable if Redis can't take it.

    With TASKHUB_UPDATE_WAIT_REPLICAS, it also waits until that many replicas hold the update, and raises
    UpdateNotReplicated if fewer did within TASKHUB_UPDATE_WAIT_MS: the update is then on the primary,
    where a writer may still apply it, but it would not survive the primary's loss, so the client hears
    it was not confirmed rather than a 200 that a failover could take back."""
    replicas = int(settings.TASKHUB_UPDATE_WAIT_REPLICAS)
    if replicas <= 0:
        try:
            return push_update(update)
        except redis.RedisError as exc:
            raise UpdateQueueUnavailable(f"Task update could not be queued: {exc}") from exc
    timeout_ms = int(settings.TASKHUB_UPDATE_WAIT_MS)
    try:
        stream_id, acknowledged = push_update_replicated(update, replicas=replicas, timeout_ms=timeout_ms)
    except redis.RedisError as exc:
        # It may have failed after the append, while waiting: queued or not, nobody can tell.
        raise UpdateNotReplicated(
            f"Task update not confirmed: Redis failed before {replicas} replica(s) acknowledged it ({exc}). "
            f"It may still be applied; {_SAFE_TO_REPEAT}"
        ) from exc
    if acknowledged < replicas:
        raise UpdateNotReplicated(
            f"Task update not confirmed: {acknowledged} of {replicas} replica(s) acknowledged it within "
            f"{timeout_ms} ms. It is queued on the Redis primary and may still be applied, but a failover now "
            f"would lose it; {_SAFE_TO_REPEAT}"
        )
    return stream_id


# A repeated status changes nothing (tasks_app/tasks/transitions.py: SAME), so a retry cannot do harm.
_SAFE_TO_REPEAT = "sending the same update again is safe"


def read_after(shard: int, last_id: str, count: int) -> list[Entry]:
    """Entries of a shard strictly after last_id, oldest first."""
    raw = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client().xrange(keys.stream_key(shard), min=f"({last_id}", max="+", count=count),
    )
    return [decode_entry(sid, fields) for sid, fields in raw]


def wait_for_any(last_ids: dict[int, str], block_ms: int) -> bool:
    """Block until some shard has an entry after its last applied id; True if one arrived."""
    streams = {keys.stream_key(shard): last_id for shard, last_id in last_ids.items()}
    return bool(client(blocking=block_ms / 1000).xread(streams, count=1, block=block_ms))  # type: ignore[arg-type]


def trim_upto(shard: int, last_id: str) -> None:
    """Drop entries up to and including last_id; they are committed to the database."""
    ms, seq = (int(p) for p in last_id.split("-"))
    client().xtrim(keys.stream_key(shard), minid=f"{ms}-{seq + 1}", approximate=False)


def _lengths() -> list[int]:
    pipe = client().pipeline(transaction=False)
    for shard in range(keys.shard_count()):
        pipe.xlen(keys.stream_key(shard))
    return pipe.execute()  # type: ignore[no-untyped-call,no-any-return]


def nonempty_shards() -> list[int]:
    """The shards that hold entries: not yet applied, or applied and not yet trimmed (a writer that died
    between its commit and its trim; its next batch trims them)."""
    return [shard for shard, length in enumerate(_lengths()) if length]


def backlog() -> int:
    """Entries in Redis over all shards: the ones not yet applied, plus any applied batch whose
    trim was cut short by a writer dying right after its commit (the next batch trims those)."""
    return sum(_lengths())
