"""Every Redis key taskhub uses, in one place. All of them live under TASKHUB_STREAM_PREFIX, so one
deployment (or one test) never reads another's.

Keys that belong to one run are named by its run id, never by the client-chosen task_id, and expire:
a task deleted and created again under the same id never meets its old run's state.
"""

from __future__ import annotations

import zlib

from django.conf import settings


def _prefix() -> str:
    return str(settings.TASKHUB_STREAM_PREFIX)


def shard_count() -> int:
    return int(settings.TASKHUB_STREAM_SHARDS)


def shard_for(name: str) -> int:
    """Stable: all updates of one task (or heartbeats of one node) land in one shard, in order."""
    return zlib.crc32(name.encode()) % shard_count()


def stream_key(shard: int) -> str:
    """One shard of the status-update stream (the seed's Figure 1)."""
    return f"{_prefix()}:{shard}"


def alive_key(node: str) -> str:
    """Set by a node's heartbeat with a time to live: is node X up?"""
    return f"{_prefix()}:alive:{node}"


def run_end_key(run_id: str) -> str:
    """Why a run must stop, set by the server: "cancel" (cancelled) or "void" (a retry or the
    dead-node sweep replaced it). One key, so a node learns either with one read."""
    return f"{_prefix()}:run:{run_id}:end"


def run_asks_key(node: str) -> str:
    """The server's questions to a node about runs it no longer lists (workers/protocol/run_asks.py): a
    hash from run id to the task it belongs to, answered by the node's heartbeat."""
    return f"{_prefix()}:asks:{node}"


def fanout_reply_key(run_id: str, retries: int, mode: str, nonce: str) -> str:
    """Where the participants of one fan-out answer its initiator."""
    return f"{_prefix()}:fanout:{run_id}:{retries}:{mode}:{nonce}"


def metrics_key() -> str:
    """The hash that holds every Prometheus counter (tasks_app/ops/metrics.py)."""
    return f"{_prefix()}:metrics"


def dead_letter_key() -> str:
    """The dead-letter stream: update-stream entries the writers could not apply (the database
    refused them, or they were unreadable), kept until an operator discards them
    (tasks_app/tasks/dead_letters.py)."""
    return f"{_prefix()}:dead"


def dead_letter_origins_key() -> str:
    """The hash from an original entry ("<shard>/<stream id>") to its dead letter's id, so that a
    batch retried after its commit failed does not dead-letter the same entry twice."""
    return f"{_prefix()}:dead:origins"


def run_state_ttl() -> int:
    """Seconds a run's keys (and a node's ledger of it) are kept: well past the redelivery window."""
    return int(settings.TASKHUB_RUN_STATE_TTL_SECONDS)
