"""Appending to the update stream. Both sides write it (the API's /task_update, the nodes' reports
and heartbeats); only the server's writers read it (tasks_app/tasks/stream.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.messages import StatusUpdate, encode_heartbeat, encode_update
from workers.protocol.status import TERMINAL


def _sid(stream_id: Any) -> str:
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def push_update(update: StatusUpdate) -> str:
    """Append one status update to its task's shard. Returns the stream id; raises redis.RedisError."""
    fields: Any = encode_update(update)
    return _sid(client().xadd(keys.stream_key(keys.shard_for(update.task_id)), fields))


def push_update_replicated(update: StatusUpdate, *, replicas: int, timeout_ms: int) -> tuple[str, int]:
    """Append one status update, then wait until `replicas` replicas of the primary hold it or `timeout_ms`
    have passed (Redis WAIT; timeout_ms must be 1 or more, 0 waits forever). Returns the stream id and the
    number of replicas that acknowledged it, which is below `replicas` on a timeout: the update is then on
    the primary but may be lost if the primary fails now. Raises redis.RedisError, after which the update
    may or may not be in the stream.

    One pipeline, so one connection: WAIT covers the writes sent earlier on its own connection. Its socket
    timeout is the client's plus the wait, so that waiting is never taken for an outage."""
    pipe = client(blocking=timeout_ms / 1000).pipeline(transaction=False)
    fields: Any = encode_update(update)
    pipe.xadd(keys.stream_key(keys.shard_for(update.task_id)), fields)
    pipe.wait(replicas, timeout_ms)
    stream_id, acknowledged = pipe.execute()  # type: ignore[no-untyped-call]
    return _sid(stream_id), int(acknowledged)


def push_updates(updates: Sequence[StatusUpdate]) -> list[str]:
    """Append several updates in one round trip, in order (a pipeline, not a transaction: Redis runs
    them one after another). Returns their stream ids; raises redis.RedisError, and then any prefix of
    them may be in the stream already."""
    pipe = client().pipeline(transaction=False)
    for update in updates:
        fields: Any = encode_update(update)
        pipe.xadd(keys.stream_key(keys.shard_for(update.task_id)), fields)
    stream_ids: list[Any] = pipe.execute()  # type: ignore[no-untyped-call]
    return [_sid(stream_id) for stream_id in stream_ids]


# A node's reports, each sent only if the server has not ended its run (workers/protocol/run_end.py): a
# voided run reports nothing, a cancelled run only its outcome (and without the steps it folds). One round
# trip for the check and the append, instead of a read of the runs' end markers and then the XADDs.
# KEYS: per report, its run's end marker, then its shard. ARGV: per report, "1" if its status is final,
# the folded steps ("" if none), the number of its other fields, then those fields.
_REPORTS_LUA = """
local out = {}
local a = 1
for i = 1, #KEYS, 2 do
  local final, steps, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[a + 2 + j] end
  a = a + 3 + n
  local ended = redis.call('GET', KEYS[i])
  if ended == 'void' or (ended == 'cancel' and final ~= '1') then
    out[#out + 1] = ''
  else
    if steps ~= '' and ended ~= 'cancel' then
      fields[#fields + 1] = 'steps'
      fields[#fields + 1] = steps
    end
    out[#out + 1] = redis.call('XADD', KEYS[i + 1], '*', unpack(fields))
  end
end
return out
"""


def push_reports(updates: Sequence[StatusUpdate]) -> list[str]:
    """Append a node's reports in one round trip, in order, skipping those of runs the server has ended.
    Returns each one's stream id ("" for a skipped one); raises redis.RedisError, and then any prefix of
    them may be in the stream already."""
    if not updates:
        return []
    keys_: list[str] = []
    argv: list[str] = []
    for update in updates:
        fields = encode_update(update)
        steps = fields.pop("steps", "")
        keys_ += [keys.run_end_key(update.run_id), keys.stream_key(keys.shard_for(update.task_id))]
        argv += ["1" if update.status in TERMINAL else "0", steps, str(2 * len(fields))]
        argv += [x for pair in fields.items() for x in pair]
    redis_client = client()
    global _reports_script
    if _reports_script is None:
        _reports_script = redis_client.register_script(_REPORTS_LUA)  # its SHA, computed once
    ids: list[Any] = _reports_script(keys=keys_, args=argv, client=redis_client)
    return [_sid(i) for i in ids]


_reports_script: Any = None


def push_heartbeat(node: str, info: dict[str, Any]) -> str:
    """A node is alive; the writers record it on the Node row (nodes never open the database)."""
    fields: Any = encode_heartbeat(node, info)
    return _sid(client().xadd(keys.stream_key(keys.shard_for(node)), fields))
