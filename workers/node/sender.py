"""The sender: a node's thread that moves reports from its outbox (workers/node/outbox.py) to the
update stream, and keeps trying, with bounded backoff, for as long as Redis is away.

Every Redis call on the report path is here, inside that retry: reading the runs' end markers and the
XADD. A Celery task's report only writes the outbox (a local commit) and wakes this thread, so a Redis
outage never holds a task up, and never loses an outcome: a report leaves the outbox only once Redis has
answered XADD with an id (or its run's end marker says it must not be sent).

Before sending, the sender reads each run's end marker: a run the server voided (a retry or the
dead-node sweep replaced it) reports nothing, and a cancelled run reports only how it ended, so nothing
a node says can land on a newer run of the same task.

A report may reach the stream twice: a batch whose XADDs Redis ran but whose answer was lost (or a
worker killed between the XADD and forgetting the batch) is sent again. What is resent is always a
contiguous run of reports, in their first order, and the transition function makes each repeat harmless
(see tasks_app/tasks/writer.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import redis
from django.conf import settings

from workers.node import outbox as outboxes
from workers.node.outbox import Outbox
from workers.protocol.backoff import backoff_seconds
from workers.protocol.messages import Origin, StatusUpdate
from workers.protocol.status import TERMINAL
from workers.protocol.stream import push_reports

log = logging.getLogger(__name__)

BATCH = 200  # reports per round trip
IDLE_SECONDS = 5.0  # look again this often when nobody wakes us (another process's reports, say)
BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS = 0.2, 5.0  # Redis away: 0.2 s, 0.4 s ... at most 5 s apart


def deliver(box: Outbox, limit: int = BATCH) -> int:
    """Send the oldest pending reports (one round trip: each run's end marker read and the XADDs, in
    Redis), then forget them. Returns how many left the outbox. Raises redis.RedisError (they all
    stay, to be sent again) or sqlite3.Error."""
    batch = box.pending(limit)
    if not batch:
        return 0
    send([p.update for p in batch])
    box.delete([p.seq for p in batch])
    return len(batch)


def send(updates: list[StatusUpdate]) -> None:
    """Push the updates whose runs may still report, in order, folded (fold()), in one round trip that
    reads each run's end marker and appends (workers/protocol/stream.py: push_reports). Raises
    redis.RedisError."""
    ids = push_reports(fold(updates))
    dropped = sum(1 for i in ids if not i)
    if dropped:
        log.info("dropped %s report(s) of runs the server has ended", dropped)


def fold(updates: list[StatusUpdate]) -> list[StatusUpdate]:
    """One stream entry per run for the reports of a batch: a run's received, in_progress and outcome,
    waiting together (a busy node, a Redis outage), go as one entry that carries the earlier steps with
    their times, and the writer applies each of them (StatusUpdate.unfolded). An entry takes the place of
    its run's first report: entries of other tasks may then be in a different order, which nothing
    depends on; one task's are not. A step's own data is left out: the status after it replaces it, and
    a repeated status (progress) keeps only the last one's data. A status keeps the time it was first
    reported: a start folded with progress reports is still the start (the run's timings, its run
    timeout), not the last progress report's time."""
    out: list[StatusUpdate] = []
    last: dict[str, int] = {}  # task_id -> its latest entry in `out`
    for update in updates:
        i = last.get(update.task_id)
        before = out[i] if i is not None else None
        if i is not None and before is not None and before.at is not None and _foldable(before, update):
            steps = before.steps
            if not steps or steps[-1][0] != before.status:  # else that status is a step already, earlier
                steps = (*steps, (before.status, before.at))
            out[i] = replace(update, steps=(*steps, *update.steps))
            continue
        last[update.task_id] = len(out)
        out.append(update)
    return out


def _foldable(before: StatusUpdate, after: StatusUpdate) -> bool:
    return (
        before.origin is Origin.NODE
        and after.origin is Origin.NODE
        and bool(before.run_id)
        and before.run_id == after.run_id
        and before.at is not None
        and after.at is not None
        and before.status not in TERMINAL  # nothing follows an outcome but a duplicate of it
        and not (before.retry or after.retry)
    )


class Sender(threading.Thread):
    """Delivers until stopped: at once when woken by a new report, else every IDLE_SECONDS."""

    def __init__(self, box: Outbox) -> None:
        super().__init__(name=f"outbox-{box.path.parent.parent.name}", daemon=True)
        self.box = box
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        failures = 0
        linger = float(settings.TASKHUB_REPORT_LINGER_MS) / 1000
        woken = False
        while True:
            if woken and linger > 0:
                # Woken from idle by a report: the run's next ones (a no-op's in_progress and outcome come
                # within milliseconds) join it, and go as one folded entry in one round trip (fold()).
                self._stopping.wait(linger)
            woken = False
            self._wake.clear()  # before reading: a report put after this wakes the wait below
            try:
                sent = deliver(self.box)
            except Exception as exc:
                # Redis away, the disk failing, or a bug of ours: the reports stay on disk, and this thread
                # keeps trying (it must not die: nothing else sends them while this worker runs).
                if self._stopping.is_set():
                    break  # what is left waits on disk for the next worker on this data dir
                if failures == 0:
                    expected = isinstance(exc, redis.RedisError | sqlite3.Error)
                    log.log(
                        logging.WARNING if expected else logging.ERROR,
                        "reports wait in the outbox %s: %s; retrying", self.box.path, exc, exc_info=not expected,
                    )  # fmt: skip
                delay = backoff_seconds(failures, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS, jitter=True)
                failures += 1
                # Only a stop cuts the wait short: new reports while Redis is away must not hammer it.
                self._stopping.wait(delay)
                continue
            if failures:
                log.info("the outbox %s is delivering again after %s failed tries", self.box.path, failures)
                failures = 0
            if sent:
                continue  # maybe more behind them
            if self._stopping.is_set():
                break
            woken = self._wake.wait(IDLE_SECONDS)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is pending if Redis takes it within `timeout`, then end; the rest stays on disk."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)


_running: dict[Path, Sender] = {}
_running_lock = threading.Lock()


def running(state_dir: Path) -> Sender:
    """The sender of this node's outbox in this process, started if it is not running: at worker start
    (to send what a previous worker left), and by the first report of a process that had none."""
    box = outboxes.at(state_dir)
    with _running_lock:
        sender = _running.get(box.path)
        if sender is None or not sender.is_alive():
            sender = _running[box.path] = Sender(box)
            sender.start()
        return sender


def stop_all(timeout: float = 5.0) -> None:
    with _running_lock:
        senders = list(_running.values())
        _running.clear()
    for sender in senders:
        sender.stop(timeout)
