"""What travels between the server and its nodes.

- To a node, on its queue: the keyword arguments of `taskhub.execute` (one run of a task) and of
  `taskhub.execute_part` (one participant's piece of a fanned-out run). The Celery task id of
  `taskhub.execute` is the run id.
- To the server, on the update stream: status updates (each naming the run it is about) and node
  heartbeats, as flat Redis stream entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    # The run a node's report is about; a report for any other run than the task's current one is ignored.
    run_id: str = ""
    origin: Origin = Origin.CLIENT


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
    return fields


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
        )
    except (KeyError, UnicodeDecodeError, ValueError):
        # Written by something other than push(); a poison entry must not stop the writers.
        return Entry(stream_id=sid)
    return Entry(stream_id=sid, update=update)
