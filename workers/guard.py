"""Exactly-once execution on a node, when the broker delivers a message more than once.

Each run holds an exclusive flock on a per-run lock file while it works. The kernel drops the
lock if the process dies, so a redelivered message after a SIGKILL can take over at once, while a
duplicate arriving during a live run waits for it and then returns the recorded outcome instead of
running the handler again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
