"""The runs a node worker holds right now, for its heartbeat (workers/node/heartbeat.py): from the moment
it receives a run's message (a run waiting for a free slot, or for its automatic retry, counts) until that
run's outcome is in the outbox (workers/node/outbox.py). Then the outbox lists it until the stream has it.

So every heartbeat says, of each run this node was given: running, or its outcome is on its way. The
server's stalled-run sweep (tasks_app/fleet/stalled.py) recovers a run its node names in neither list.
For that the order matters: a run is added before its `received` report is made, and removed only after
its outcome is in the outbox; the heartbeat reads this set before the outbox (runs_report).

One worker process per node (the threads pool), so a set in memory is the whole node's.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from workers.node import outbox

log = logging.getLogger(__name__)

# At most this many run ids of each list in one heartbeat, so that a heartbeat entry stays small. A node
# that holds more says so ("truncated"), and the server does not judge its runs from that heartbeat.
MAX_LISTED = 1000

_lock = threading.Lock()
_runs: set[str] = set()


def hold(run_id: str) -> None:
    with _lock:
        _runs.add(run_id)


def release(run_id: str) -> None:
    with _lock:
        _runs.discard(run_id)


def held() -> set[str]:
    with _lock:
        return set(_runs)


def runs_report(state_dir: Path, listing_for: float, no_outcome: list[str] | None = None) -> dict[str, Any] | None:
    """What a heartbeat says of this node's runs: the ones it holds, the ones with reports not yet
    delivered, whether either list was cut at MAX_LISTED, for how many seconds this worker has been
    listing them (a worker that just started has not received its redelivered messages yet), and the runs
    the server asked about that it has no outcome for (workers/node/lifeline.py). None if the outbox
    cannot be read: then the heartbeat vouches for nothing."""
    running = held()  # before the outbox: a run leaves this set only once its outcome is in the outbox
    try:
        undelivered = outbox.at(state_dir).pending_runs()
    except sqlite3.Error as exc:
        log.warning("the heartbeat cannot list undelivered runs: %s", exc)
        return None
    truncated = len(running) > MAX_LISTED or len(undelivered) > MAX_LISTED
    return {
        "running": sorted(running)[:MAX_LISTED],
        "undelivered": sorted(undelivered)[:MAX_LISTED],
        "truncated": truncated,
        "listing_for": round(max(0.0, listing_for), 3),
        "no_outcome": sorted(no_outcome or [])[:MAX_LISTED],
    }
