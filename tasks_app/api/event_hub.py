"""The live tail of the event stream: one thread per web process reads new history rows and hands each
event to the streams whose filters take it.

One query per TASKHUB_EVENTS_POLL_SECONDS per process, however many streams are open, so a hundred
watching clients cost the database what one does. Each stream has a bounded queue
(TASKHUB_EVENTS_BUFFER): a client too slow to take its events is cut off (it resumes from the history
table with Last-Event-ID), so no client can grow the server's memory.

The frontier: every history id at or below it has been handed out or will never exist. Rows become
visible in commit order, not id order, so a missing id below a visible row may be a transaction still
running. The hub stops at such a gap until it is decided (tasks_app/tasks/events.py, snapshot_bounds:
the transactions that could hold it have ended; on SQLite ids are given in commit order, so a gap is a
deleted row) or TASKHUB_EVENTS_GAP_SECONDS have passed. A stream's catch-up reads only ids at or below
the frontier it subscribed at, and its queue gets only ids above it: each event exactly once, in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection

from tasks_app.fleet.selectors import node_clusters
from tasks_app.tasks.events import Event, EventFilter, events_after, last_event_id, snapshot_bounds

log = logging.getLogger(__name__)

BATCH = 1000  # rows per read of the tail
CLUSTERS_TTL = 10.0  # seconds a node -> cluster map is reused (a node is rarely added)
IDLE_SECONDS = 2.0  # the tail stops this long after its last stream has gone


@dataclass(eq=False)  # compared and hashed by identity: a set of them
class Subscription:
    filt: EventFilter
    frontier: int  # ids at or below it are the stream's catch-up, read from the table
    events: queue.Queue[Event] = field(default_factory=lambda: queue.Queue(settings.TASKHUB_EVENTS_BUFFER))
    overflowed: bool = False

    def offer(self, event: Event) -> None:
        if self.overflowed or not self.filt.matches(event):
            return
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.overflowed = True  # the stream sees it on its next turn and ends with `event: cutoff`


@dataclass
class _Gap:
    first_missing: int
    seen_at: float  # monotonic
    xmax: int | None  # PostgreSQL: the snapshot's xmax when the gap was first seen


class Hub:
    """The process's tail of the history table. Started by the first subscriber; it stops IDLE_SECONDS after
    the last one has gone (giving its database connection back), and the next subscriber starts it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._frontier: int | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failed = False  # the tail's latest read failed (the database is down): new streams get a 503
        self._gap: _Gap | None = None
        self._clusters: dict[str, str] = {}
        self._clusters_at = 0.0

    def subscribe(self, filt: EventFilter, *, timeout: float) -> Subscription:
        """A new subscription; its frontier is the hub's once the hub has one (waiting at most `timeout` for
        the first), so a catch-up never reads past an undecided gap. Events the hub hands it meanwhile are at
        or below that frontier, and the stream skips them. Raises OperationalError (a 503) when the tail
        cannot read the history table (it has just failed, or has no frontier in time)."""
        sub = Subscription(filt=filt, frontier=0)
        with self._lock:
            self._subs.add(sub)  # first: a running hub never stops with a subscriber waiting
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._frontier, self._gap, self._failed = None, None, False
                self._ready.clear()
                self._thread = threading.Thread(target=self._run, name="taskhub-events", daemon=True)
                self._thread.start()
        try:
            deadline = time.monotonic() + timeout
            while not self._ready.wait(0.05):
                if self._failed or time.monotonic() > deadline:
                    raise OperationalError("the event stream cannot read the task history now; retry later")
            with self._lock:
                assert self._frontier is not None
                sub.frontier = self._frontier
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread now, subscribers or not (the process is ending: tests, a worker's exit)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def clusters(self) -> dict[str, str]:
        """node -> cluster, refreshed every CLUSTERS_TTL seconds (used by catch-ups too)."""
        now = time.monotonic()
        if now - self._clusters_at > CLUSTERS_TTL:
            self._clusters, self._clusters_at = node_clusters(), now
        return self._clusters

    @property
    def streams(self) -> int:
        return len(self._subs)

    @property
    def frontier(self) -> int | None:
        """The highest id handed out (None before the tail has started)."""
        return self._frontier

    def _run(self) -> None:
        idle_since: float | None = None
        try:
            while True:
                with self._lock:
                    if self._subs:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    if self._stopping or (idle_since is not None and time.monotonic() - idle_since > IDLE_SECONDS):
                        self._thread = None
                        return
                full = False
                try:
                    if self._frontier is None:
                        self._begin()
                    full = self._tail()
                    self._failed = False
                except DatabaseError:
                    self._failed = True
                    log.warning("event stream: reading the history table failed; trying again", exc_info=True)
                    connection.close()
                    time.sleep(1.0)
                except Exception:
                    self._failed = True
                    log.exception("event stream: the tail failed; trying again")
                    time.sleep(1.0)
                if not full:  # a full batch: more rows are waiting, read them at once
                    time.sleep(settings.TASKHUB_EVENTS_POLL_SECONDS)
        finally:
            connection.close()

    def _begin(self) -> None:
        """The first frontier: the highest id now, once every transaction that could hold a lower one has
        ended (PostgreSQL; at most TASKHUB_EVENTS_GAP_SECONDS). The id is read first: a transaction holding
        a lower id took it before that read, so its xid is below the snapshot's xmax taken after it."""
        top = last_event_id()
        after = snapshot_bounds()
        deadline = time.monotonic() + settings.TASKHUB_EVENTS_GAP_SECONDS
        while after is not None and time.monotonic() < deadline:
            now = snapshot_bounds()
            if now is None or now[0] >= after[1]:
                break
            time.sleep(0.05)
        with self._lock:
            self._frontier = top
        self._ready.set()

    def _tail(self) -> bool:
        """Hand out the rows above the frontier, up to the first undecided gap. True if it read a full batch."""
        assert self._frontier is not None
        # Taken before the read: a gap is decided only if its possible holders had all ended by then, so
        # that a holder's row, if it committed, is in this read (tasks_app/tasks/events.py, snapshot_bounds).
        before = snapshot_bounds()
        rows = events_after(after=self._frontier, limit=BATCH, clusters=self.clusters())
        if any(e.node and e.node not in self._clusters for e in rows) and time.monotonic() - self._clusters_at > 1:
            self._clusters_at = 0.0  # a new node: read the map again
            clusters = self.clusters()
            rows = [_with_cluster(e, clusters) for e in rows]
        deliver: list[Event] = []
        frontier = self._frontier
        for event in rows:
            if event.id != frontier + 1 and not self._gap_decided(frontier + 1, before):
                break
            self._gap = None
            deliver.append(event)
            frontier = event.id
        with self._lock:
            for event in deliver:
                for sub in self._subs:
                    sub.offer(event)
            self._frontier = frontier
        return len(rows) == BATCH

    def _gap_decided(self, missing: int, before: tuple[int, int] | None) -> bool:
        """Whether the ids from `missing` up to the next visible row will never appear. `before`: the
        snapshot bounds taken before this read."""
        gap = self._gap
        if gap is None or gap.first_missing != missing:
            # Whoever holds the missing id took it before this read (a higher id is visible): its xid is
            # below the xmax of a snapshot taken now. Decided on a later read, whose `before` shows it ended.
            after = snapshot_bounds()
            self._gap = _Gap(missing, time.monotonic(), after[1] if after else None)
            return after is None  # SQLite: ids are given in commit order, so a gap is a row already gone
        if time.monotonic() - gap.seen_at > settings.TASKHUB_EVENTS_GAP_SECONDS:
            log.warning(
                "event stream: history id %s did not appear within TASKHUB_EVENTS_GAP_SECONDS; going on", missing
            )
            return True
        return before is not None and gap.xmax is not None and before[0] >= gap.xmax


def _with_cluster(event: Event, clusters: dict[str, str]) -> Event:
    if event.cluster or not event.node:
        return event
    return replace(event, cluster=clusters.get(event.node, ""))


HUB = Hub()
