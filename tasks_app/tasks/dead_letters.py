"""The dead-letter stream (`<TASKHUB_STREAM_PREFIX>:dead`): update-stream entries the writers could
not apply, because the database refused them or they were unreadable. A writer never drops an entry
silently; it moves it here, inside the shard's transaction and before its offset commits, so a
crash can at worst dead-letter an entry twice, never lose it (and `add` makes even that a no-op).

Each dead letter keeps the original entry's fields byte for byte and in order (duplicates too), as
`raw:<i>:field` / `raw:<i>:value`, copied inside Redis by the script below, never decoded and
re-encoded by Python. Next to them: the shard and stream id it came from, the task id, status or
node if it was readable, and the database's error. Its own stream id is the time it was written
(Redis's clock). They stay until an operator discards them (the admin's dead-letter page).
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.messages import Entry

# A database's error text can run long (PostgreSQL's DETAIL quotes the value); enough to diagnose.
ERROR_MAX_CHARS = 4000

_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")

# KEYS: the dead-letter stream, the origins hash, the original shard's stream.
# ARGV: origin ("<shard>/<stream id>"), shard, stream id, task id, status, node, error.
# One script, so the check, the copy and the index are atomic: two writers (or a retried batch)
# dead-lettering the same entry leave one dead letter.
_ADD = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {existing, 0} end
local fields = {'shard', ARGV[2], 'stream_id', ARGV[3], 'task_id', ARGV[4], 'status', ARGV[5],
                'node', ARGV[6], 'error', ARGV[7]}
local found = redis.call('XRANGE', KEYS[3], ARGV[3], ARGV[3])
if #found == 1 then
  local raw = found[1][2]
  local n = 0
  for i = 1, #raw, 2 do
    fields[#fields + 1] = 'raw:' .. n .. ':field'
    fields[#fields + 1] = raw[i]
    fields[#fields + 1] = 'raw:' .. n .. ':value'
    fields[#fields + 1] = raw[i + 1]
    n = n + 1
  end
  fields[#fields + 1] = 'raw_fields'
  fields[#fields + 1] = tostring(n)
else
  fields[#fields + 1] = 'raw_missing'
  fields[#fields + 1] = '1'
end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], id)
return {id, 1}
"""

# KEYS: the dead-letter stream, the origins hash. ARGV: dead-letter ids. Returns how many went.
_DISCARD = """
local removed = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    local f = found[1][2]
    local shard, sid
    for i = 1, #f, 2 do
      if f[i] == 'shard' and not shard then shard = f[i + 1] end
      if f[i] == 'stream_id' and not sid then sid = f[i + 1] end
    end
    if shard and sid then
      local origin = shard .. '/' .. sid
      if redis.call('HGET', KEYS[2], origin) == id then redis.call('HDEL', KEYS[2], origin) end
    end
    removed = removed + redis.call('XDEL', KEYS[1], id)
  end
end
return removed
"""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    shard: int
    stream_id: str  # the original entry's id in its shard
    task_id: str  # "" if the entry was unreadable or a heartbeat
    status: str
    node: str  # a heartbeat's node
    error: str
    raw: tuple[tuple[bytes, bytes], ...]  # the original fields, exactly as they were in the stream
    raw_missing: bool  # the entry had already left its shard when it was dead-lettered

    @property
    def at(self) -> datetime:
        """When it was dead-lettered: the millisecond part of its id, Redis's clock."""
        return _id_time(self.id)

    @property
    def sent_at(self) -> datetime:
        """When the original entry reached the update stream."""
        return _id_time(self.stream_id)

    @property
    def raw_shown(self) -> builtins.list[tuple[str, str]]:
        """The raw fields as text for a page: bytes that are not UTF-8 and control characters are
        shown as escapes, so what is displayed says exactly what is stored."""
        return [(_show(k), _show(v)) for k, v in self.raw]


def is_id(value: str) -> bool:
    """Whether `value` has the shape of a stream id (what `list(after=...)` and `discard_all(upto=...)` take)."""
    return bool(_ID_RE.fullmatch(value))


def origin(shard: int, stream_id: str) -> str:
    return f"{shard}/{stream_id}"


def add(shard: int, entry: Entry, error: str) -> str:
    """Dead-letter one entry of a shard; returns the dead letter's id. The same (shard, stream id)
    twice gives the first one's id and adds nothing. Raises redis.RedisError: the caller must
    then abort its batch, never skip the entry."""
    update, beat = entry.update, entry.heartbeat
    args = [
        origin(shard, entry.stream_id),
        str(shard),
        entry.stream_id,
        update.task_id if update else "",
        update.status if update else "",
        beat.node if beat else "",
        error[:ERROR_MAX_CHARS],
    ]
    script = client().register_script(_ADD)
    result = cast(
        builtins.list[Any],
        script(
            keys=[keys.dead_letter_key(), keys.dead_letter_origins_key(), keys.stream_key(shard)],
            # backslashreplace: a lone surrogate in an error text must not stop the dead-lettering.
            args=[a.encode("utf-8", "backslashreplace") for a in args],
        ),
    )
    return _text(result[0])


def list(limit: int = 50, after: str | None = None) -> builtins.list[DeadLetter]:
    """Up to `limit` dead letters, oldest first, after the dead letter `after` if given."""
    start = f"({_checked(after)}" if after else "-"
    rows = cast(
        builtins.list[tuple[bytes, dict[bytes, bytes]]],
        client().xrange(keys.dead_letter_key(), min=start, max="+", count=limit),
    )
    return [_parse(dead_id, fields) for dead_id, fields in rows]


def get(dead_id: str) -> DeadLetter | None:
    if not is_id(dead_id):
        return None
    rows = cast(
        builtins.list[tuple[bytes, dict[bytes, bytes]]],
        client().xrange(keys.dead_letter_key(), min=dead_id, max=dead_id),
    )
    return _parse(*rows[0]) if rows else None


def newest_id() -> str | None:
    rows = cast(builtins.list[tuple[bytes, Any]], client().xrevrange(keys.dead_letter_key(), count=1))
    return _text(rows[0][0]) if rows else None


def count() -> int:
    return int(cast(int, client().xlen(keys.dead_letter_key())))


def discard(ids: builtins.list[str]) -> int:
    """Remove these dead letters (ids that are not dead letters are ignored). Returns how many went."""
    valid = [i for i in ids if is_id(i)]
    if not valid:
        return 0
    script = client().register_script(_DISCARD)
    return int(cast(int, script(keys=[keys.dead_letter_key(), keys.dead_letter_origins_key()], args=valid)))


def discard_all(upto: str | None = None) -> int:
    """Remove every dead letter, or with `upto` only those up to that id: an operator who discards
    "all" the page showed keeps the ones that arrived since. Returns how many went."""
    if upto is None:
        pipe = client().pipeline(transaction=True)
        pipe.xlen(keys.dead_letter_key())
        pipe.delete(keys.dead_letter_key(), keys.dead_letter_origins_key())
        n, _ = pipe.execute()  # type: ignore[no-untyped-call]
        return int(n)
    upto = _checked(upto)
    removed = 0
    while True:
        rows = cast(
            builtins.list[tuple[bytes, Any]],
            client().xrange(keys.dead_letter_key(), min="-", max=upto, count=500),
        )
        if not rows:
            return removed
        removed += discard([_text(dead_id) for dead_id, _ in rows])


# --- helpers -----------------------------------------------------------------------------------


def _checked(dead_id: str) -> str:
    if not is_id(dead_id):
        raise ValueError(f"not a stream id: {dead_id!r}")
    return dead_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_time(stream_id: str) -> datetime:
    return datetime.fromtimestamp(int(stream_id.split("-")[0]) / 1000, UTC)


def _show(value: bytes) -> str:
    text = value.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def _parse(dead_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    def field(name: str) -> str:
        return fields.get(name.encode(), b"").decode("utf-8", "backslashreplace")

    n = int(fields.get(b"raw_fields", b"0"))
    raw = tuple((fields.get(b"raw:%d:field" % i, b""), fields.get(b"raw:%d:value" % i, b"")) for i in range(n))
    return DeadLetter(
        id=_text(dead_id),
        shard=int(fields.get(b"shard", b"-1")),
        stream_id=field("stream_id"),
        task_id=field("task_id"),
        status=field("status"),
        node=field("node"),
        error=field("error"),
        raw=raw,
        raw_missing=fields.get(b"raw_missing") == b"1",
    )
