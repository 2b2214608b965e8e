"""What travels between the server and its nodes.

- To a node, on its queue: the keyword arguments of `taskhub.execute` (one run of a task) and of
  `taskhub.execute_part` (one participant's piece of a fanned-out run). The Celery task id of
  `taskhub.execute` is the run id.
- To the server, on the update stream: status updates (each naming the run it is about) and node
  heartbeats, as flat Redis stream entries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypedDict

from workers.protocol.status import canonical


class ExecuteKwargs(TypedDict):
    task_id: str
    run_id: str
    task_type: str
    task_data: dict[str, Any]
    node: str
    attempt: int


class PartKwargs(TypedDict):
    task_id: str
    run_id: str
    task_type: str
    payload: dict[str, Any]
    node: str
    attempt: int
    retries: int
    mode: str  # "part", or "compensate" to undo it
    reply_key: str


class Origin(str, Enum):
    """Who sent a status update; the transition function trusts each differently."""

    CLIENT = "client"  # the API, the admin, a service driving its own (tracked) task
    NODE = "node"  # a node reporting on one run of an executed task; must name that run
    SERVER = "server"  # taskhub itself: cancel, retry, the dead-node sweep, the pull API

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StatusUpdate:
    task_id: str
    status: str
    # None keeps the stored task_status_data; a dict replaces it.
    status_data: dict[str, Any] | None = None
    source: str = ""
    # Only an explicit retry may take a failed (or cancelled) task back to pending.
    retry: bool = False
    # A pending task moved to another node (a drain), with a new run: pending -> pending, from taskhub only.
    move: bool = False
    # The run a node's report is about; a report for any other run than the task's current one is ignored.
    run_id: str = ""
    origin: Origin = Origin.CLIENT
    # When the change happened where it was reported (epoch seconds; None: when a writer applies it), and
    # the earlier statuses a node's report folds in, each with its own time (workers/node/sender.py: fold):
    # one stream entry for a run's received, in_progress and outcome, and a history row for each of them.
    at: float | None = None
    steps: tuple[tuple[str, float], ...] = ()

    def unfolded(self) -> list[StatusUpdate]:
        """The updates this one stands for, in order: each folded step (no data of its own), then itself."""
        if not self.steps:
            return [self]
        base = replace(self, status_data=None, steps=())
        return [replace(base, status=status, at=at) for status, at in self.steps] + [replace(self, steps=())]


@dataclass(frozen=True)
class Heartbeat:
    node: str
    at: float  # epoch seconds, from the stream entry's id (Redis's clock, not the node's)
    info: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    stream_id: str
    update: StatusUpdate | None = None
    heartbeat: Heartbeat | None = None  # neither: an entry we cannot read


def encode_update(update: StatusUpdate) -> dict[str, str]:
    fields = {"task_id": update.task_id, "status": update.status, "source": update.source}
    if update.status_data is not None:
        fields["data"] = json.dumps(update.status_data, separators=(",", ":"))
    if update.run_id:
        fields["run"] = update.run_id
    if update.origin is not Origin.CLIENT:
        fields["origin"] = update.origin.value
    if update.at is not None:
        fields["at"] = f"{update.at:.6f}"
    if update.steps:
        fields["steps"] = json.dumps([[status, round(at, 6)] for status, at in update.steps], separators=(",", ":"))
    return fields


def _finite(x: float) -> float:
    """A time the server can store: finite, and within what a datetime holds (a node's clock, or a bug,
    could send 1e13; the writer would fail on it, not the decoding)."""
    if not math.isfinite(x):
        raise ValueError("not a time")
    try:
        datetime.fromtimestamp(x, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("not a time") from None
    return float(x)


def _steps(raw: bytes | None) -> tuple[tuple[str, float], ...]:
    """Folded steps as sent: [[status, at], ...], each status a known one. ValueError otherwise."""
    if raw is None:
        return ()
    steps = []
    for item in json.loads(raw):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float)):
            raise ValueError("not a folded step")
        _finite(item[1])
        status = canonical(str(item[0]))
        if status is None:
            raise ValueError("not a status")
        steps.append((status, float(item[1])))
    return tuple(steps)


def encode_heartbeat(node: str, info: dict[str, Any]) -> dict[str, str]:
    return {"kind": "heartbeat", "node": node, "data": json.dumps(info)}


def decode_entry(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    """An entry of the update stream. One that push() did not write decodes to neither kind."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    try:
        data = fields.get(b"data")
        if fields.get(b"kind") == b"heartbeat":
            info = json.loads(data) if data is not None else {}
            # Redis's clock (the entry id), not the node's: a node with a slow clock is not "dead".
            beat = Heartbeat(node=fields[b"node"].decode(), at=int(sid.split("-")[0]) / 1000, info=info)
            return Entry(stream_id=sid, heartbeat=beat if isinstance(info, dict) else None)
        status = canonical(fields[b"status"].decode())
        status_data = json.loads(data) if data is not None else None
        if status is None or not (status_data is None or isinstance(status_data, dict)):
            raise ValueError("not a status update")
        update = StatusUpdate(
            task_id=fields[b"task_id"].decode(),
            status=status,
            status_data=status_data,
            source=fields.get(b"source", b"").decode(),
            run_id=fields.get(b"run", b"").decode(),
            origin=Origin(fields.get(b"origin", b"client").decode()),
            at=_finite(float(fields[b"at"])) if b"at" in fields else None,
            steps=_steps(fields.get(b"steps")),
        )
    except (KeyError, UnicodeDecodeError, ValueError, TypeError):
        # Written by something other than push(); a poison entry must not stop the writers.
        return Entry(stream_id=sid)
    return Entry(stream_id=sid, update=update)
