"""Exactly-once execution on a node, when the broker delivers a message more than once.

Each run (run id, automatic retry, and part or compensation) holds an exclusive flock on a lock file
of its own while it works. The kernel drops the lock if the process dies, so a redelivered message
after a SIGKILL can take over at once, while a duplicate arriving during a live run waits for it and
then returns the recorded outcome instead of running the handler again.

The ledger is keyed by run id, never by the client-chosen task_id, and its files expire after
TASKHUB_RUN_STATE_TTL_SECONDS (prune): a task created again under an old id never meets its old run.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PRUNE_EVERY_SECONDS = 600.0
_last_prune = 0.0


class RunGuard:
    def __init__(self, state_dir: Path, key: str) -> None:
        runs = state_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self._lock_path = runs / f"{key}.lock"
        self._done_path = runs / f"{key}.done.json"

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def outcome(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._done_path.read_text()))
        except FileNotFoundError:
            return None

    def record(self, outcome: dict[str, Any]) -> None:
        # Write-then-rename, so a crash never leaves half an outcome behind.
        tmp = self._done_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(outcome))
        os.replace(tmp, self._done_path)


def run_here(state_dir: Path, run_id: str) -> bool:
    """Whether any delivery of this run is running on this node now (its lock is held), or has run
    here (it recorded an outcome), whatever its automatic retry or part."""
    runs = state_dir / "runs"
    if not runs.is_dir():
        return False
    if any(runs.glob(f"{run_id}.*.done.json")):
        return True
    for lock_path in runs.glob(f"{run_id}.*.lock"):
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def last_outcome(state_dir: Path, run_id: str) -> tuple[int, dict[str, Any]] | None:
    """The outcome this node recorded for the run's last try (its automatic retry number and the outcome),
    if any: what the server's stalled-run sweep asks about (workers/node/lifeline.py). Parts and their
    undoing are not the run's outcome and are left out."""
    tries: dict[int, Path] = {}
    runs = state_dir / "runs"
    if runs.is_dir():
        for path in runs.glob(f"{run_id}.*.done.json"):
            retries = path.name[len(run_id) + 1 : -len(".done.json")]
            if retries.isdigit():
                tries[int(retries)] = path
    if not tries:
        return None
    last = max(tries)
    try:
        return last, dict(json.loads(tries[last].read_text()))
    except FileNotFoundError:
        return None  # pruned meanwhile


def prune(state_dir: Path, ttl_seconds: float, now: float | None = None) -> int:
    """Delete ledger files untouched for longer than the run-state TTL. Returns how many."""
    cutoff = (time.time() if now is None else now) - ttl_seconds
    removed = 0
    runs = state_dir / "runs"
    if not runs.is_dir():
        return 0
    for path in runs.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another thread pruned it
    return removed


def prune_now_and_then(state_dir: Path, ttl_seconds: float) -> None:
    """prune(), at most every ten minutes per process: cheap enough to call before every run."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune < _PRUNE_EVERY_SECONDS:
        return
    _last_prune = now
    removed = prune(state_dir, ttl_seconds)
    if removed:
        log.info("pruned %s expired run ledger file(s) from %s", removed, state_dir)
