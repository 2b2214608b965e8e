"""The writer: applies the update stream to the tasks table in batches.

For each shard: lock its offset row (skipping shards another writer holds), read the entries
after the committed offset, apply them through the transition function, move the offset, and
commit, all in one transaction. Only after the commit are the entries trimmed from Redis. A
writer killed at any point leaves the offset where it was, so nothing is lost and nothing is
applied twice; holding the shard's row lock while applying keeps one task's updates in order
even with many writers.

No entry is dropped silently: one the database refuses, or that cannot be read at all, moves to the
dead-letter stream (tasks_app/tasks/dead_letters.py) inside the same transaction, before the offset
moves past it.

A node's report may arrive twice: its outbox resends a batch whose XADDs Redis ran but whose answer
was lost (workers/node/sender.py), always a contiguous run of one node's reports in their first order.
There is no dedupe table (run id, step): the report's status is its step, and the transition function
already makes every repeat harmless. A repeated status is Verdict.SAME, which never writes a history
row (the completion hook runs only on APPLY); a repeated final status changes nothing, or is refused if
the server has since merged a cancel's outcome into its data; a repeated in_progress carries the same
data it carried the first time, and one that comes after a later status is refused (only forward).
Replaying the run in order leaves each task where the first delivery left it
(tests/test_node_outbox.py proves it).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.transaction import TransactionManagementError

from tasks_app.errors import database_down
from tasks_app.fleet.services import record_heartbeats
from tasks_app.ops import metrics
from tasks_app.tasks import dead_letters, stream, validation
from tasks_app.tasks.models import StreamOffset
from tasks_app.tasks.transitions import Outcome, task_transition_many
from workers.protocol import keys
from workers.protocol.backoff import backoff_seconds
from workers.protocol.messages import Entry, Origin, StatusUpdate

log = logging.getLogger(__name__)

UNREADABLE = (
    "unreadable: not a status update or heartbeat (a missing field, an unknown status or origin, "
    "or data that is not a JSON object)"
)


@dataclass(frozen=True)
class BatchResult:
    shard: int
    entries: int
    applied: int
    seconds: float
    dead_lettered: int = 0


def ensure_offsets() -> None:
    """One offset row per shard (a shard's first batch makes its row too, if it is missing)."""
    StreamOffset.objects.bulk_create([StreamOffset(shard=s) for s in range(keys.shard_count())], ignore_conflicts=True)


class _NoOffsetRow(Exception):
    """The shard has no offset row yet (a new shard count, a new database)."""


def _locked_offset(shard: int) -> StreamOffset | None:
    """The shard's offset row, locked; None if another writer holds it. _NoOffsetRow if it is missing:
    made then, outside the batch's transaction, rather than checked for on every pass."""
    offset = StreamOffset.objects.select_for_update(skip_locked=True).filter(shard=shard).first()
    if offset is None and not StreamOffset.objects.filter(shard=shard).exists():
        raise _NoOffsetRow
    return offset


class _Refused(Exception):
    """The database refused a batch applied whole (bad data that got past the API, not an outage)."""


def _is_outage(exc: BaseException) -> bool:
    """The database or Redis away: the batch is retried whole, later. Anything else is the entry's fault.
    (A transaction Django will not go on with is this connection's state, not the entry's.)"""
    return database_down(exc) or isinstance(exc, redis.RedisError | TransactionManagementError)


def apply_shard_batch(shard: int, batch_size: int) -> BatchResult | None:
    """Apply the next batch of one shard. None if another writer holds it or it has nothing new.

    The batch is applied whole, with no savepoint (two round trips saved on every batch); if the
    database refuses it, the transaction is rolled back and the same batch applied again entry by entry,
    each in its own savepoint, dead-lettering what the database refuses."""
    try:
        try:
            return _apply_shard_batch(shard, batch_size, careful=False)
        except _NoOffsetRow:
            ensure_offsets()
            return _apply_shard_batch(shard, batch_size, careful=False)
    except _Refused as exc:
        log.error("shard %s: the database refused a batch (%s); applying it entry by entry", shard, exc.__cause__)
        return _apply_shard_batch(shard, batch_size, careful=True)


def _apply_shard_batch(shard: int, batch_size: int, *, careful: bool) -> BatchResult | None:
    started = time.perf_counter()
    with transaction.atomic():
        offset = _locked_offset(shard)
        if offset is None:
            return None
        entries = stream.read_after(shard, offset.last_id, batch_size)
        if not entries:
            return None
        outcomes, dead = _apply_guarded(shard, entries) if careful else _apply_whole(shard, entries)
        missing = sum(1 for o in outcomes if o.verdict is None)
        if missing:
            log.info("shard %s: %s update(s) for unknown or deleted tasks skipped", shard, missing)
        if dead:
            metrics.count_dead_lettered(dead)  # when this commits: a retried batch counts once
        offset.last_id = entries[-1].stream_id
        offset.applied += len(entries)
        offset.save(update_fields=["last_id", "applied"])
    # Committed: the entries are in the database now and can leave Redis.
    stream.trim_upto(shard, entries[-1].stream_id)
    result = BatchResult(shard, len(entries), len(outcomes) - missing, time.perf_counter() - started, dead)
    metrics.observe_writer_batch(entries=result.entries, seconds=result.seconds)  # never raises
    return result


def _apply(entries: list[Entry]) -> list[Outcome]:
    # A node's report may fold several steps of its run into one entry: each is applied, with its own time.
    updates = [u for e in entries if e.update is not None for u in _storable(e.update).unfolded()]
    outcomes = task_transition_many(updates=updates)
    heartbeats = [e.heartbeat for e in entries if e.heartbeat is not None]
    if heartbeats:
        record_heartbeats(heartbeats)
    return outcomes


def _storable(update: StatusUpdate) -> StatusUpdate:
    """Clients' updates were checked at the API; a node's report was not, and its data may hold text no
    database or page can round-trip (an error naming a file with undecodable bytes). Escaped here rather
    than refused: refusing a run's final report would lose its outcome."""
    if update.origin is not Origin.NODE or update.status_data is None or validation.is_storable(update.status_data):
        return update  # a client's data that got past the API unchecked is dead-lettered if refused
    log.warning("task %s: escaped text in a %r report that could not be stored as sent", update.task_id, update.status)
    return replace(update, status_data=validation.repaired(update.status_data))


def _dead_letter_unreadable(shard: int, entries: list[Entry]) -> int:
    dead = 0
    for entry in entries:
        if entry.update is None and entry.heartbeat is None:
            _dead_letter(shard, entry, UNREADABLE)  # idempotent: a batch tried twice letters it once
            dead += 1
    return dead


def _apply_whole(shard: int, entries: list[Entry]) -> tuple[list[Outcome], int]:
    """The batch in the shard's transaction. _Refused if the database refuses it (the caller rolls back
    and tries again entry by entry); an outage (database_down, Redis) aborts it, to be retried whole."""
    dead = _dead_letter_unreadable(shard, entries)
    try:
        return _apply(entries), dead
    except Exception as exc:
        if _is_outage(exc):
            raise
        # The database refused it, or applying an entry failed in our code: either way, entry by entry
        # the one that fails is dead-lettered and the rest go in, rather than the writer stopping on it.
        raise _Refused(f"{type(exc).__name__}: {exc}") from exc


def _apply_guarded(shard: int, entries: list[Entry]) -> tuple[list[Outcome], int]:
    """Entry by entry, each in a savepoint, dead-lettering what the database refuses, so one poison
    entry cannot stop a shard. Unreadable entries are dead-lettered too. An outage (database_down, Redis),
    or Redis not taking a dead letter, aborts the batch, to be retried whole. Returns the outcomes and
    how many entries were dead-lettered."""
    dead = _dead_letter_unreadable(shard, entries)
    outcomes: list[Outcome] = []
    for entry in entries:
        try:
            with transaction.atomic():
                outcomes += _apply([entry])
        except Exception as exc:
            if _is_outage(exc):
                raise
            if isinstance(exc, DatabaseError):
                _dead_letter(shard, entry, f"the database refused it: {type(exc).__name__}: {exc}")
            else:
                # A bug of ours met by this entry (it got past decode_entry's checks): kept, with the trace.
                log.exception("shard %s: entry %s could not be applied", shard, entry.stream_id)
                _dead_letter(shard, entry, f"it could not be applied: {type(exc).__name__}: {exc}")
            dead += 1
    return outcomes, dead


def _dead_letter(shard: int, entry: Entry, error: str) -> None:
    """Raises redis.RedisError, which aborts the batch: an entry is never skipped unrecorded."""
    dead_id = dead_letters.add(shard, entry, error)
    log.error("shard %s: entry %s moved to the dead-letter stream as %s: %s", shard, entry.stream_id, dead_id, error)


def run_once(batch_size: int | None = None) -> int:
    """One pass over every shard, in a random order so that writers spread out. Entries applied."""
    size = batch_size or settings.TASKHUB_WRITER_BATCH
    # Only the shards with entries in Redis (one round trip), not a locked read of every offset row.
    shards = stream.nonempty_shards()
    random.shuffle(shards)
    total = 0
    for shard in shards:
        result = apply_shard_batch(shard, size)
        if result is not None:
            total += result.entries
            log.debug("shard %s: %s entries in %.1f ms", shard, result.entries, result.seconds * 1000)
    return total


def run_forever(should_stop: Callable[[], bool], batch_size: int | None = None) -> None:
    log.info("writer started: %s shard(s) under %r", keys.shard_count(), settings.TASKHUB_STREAM_PREFIX)
    woke = False
    failures = 0
    while not should_stop():
        try:
            if run_once(batch_size):
                woke, failures = False, 0
                continue
            if woke:
                # Woken for entries that another writer is applying right now: back off a little
                # instead of spinning on the shards it holds.
                time.sleep(0.05)
            # Idle: sleep in Redis until an entry arrives after what has been applied.
            # A shard without its offset row yet (a new database, a new shard count) has applied nothing.
            last_ids = dict.fromkeys(range(keys.shard_count()), "0-0")
            last_ids.update(StreamOffset.objects.values_list("shard", "last_id"))
            close_old_connections()
            woke = stream.wait_for_any(last_ids, settings.TASKHUB_WRITER_BLOCK_MS)
            failures = 0
        except Exception as exc:
            if not _is_outage(exc):
                raise
            # Redis or the database went away: keep the offset, wait, try again.
            delay = backoff_seconds(failures, base=0.5, cap=10.0, jitter=True)
            failures += 1
            log.warning("writer: %s; retrying in %.1fs", exc, delay)
            close_old_connections()
            time.sleep(delay)
    log.info("writer stopped")
