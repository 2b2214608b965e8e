"""The server's questions to a node about runs it no longer lists: "how did run R end?".

A node's run ledger (workers/node/guard.py) is on the node's own disk, where the server cannot read it.
When the stalled-run sweep (tasks_app/fleet/stalled.py) finds a run its live node names in none of its
heartbeat's lists, it asks here: a hash per node, from run id to the task it belongs to and when it was
asked. The node's heartbeat thread answers (workers/node/lifeline.py): it reports the outcome its ledger
recorded, through its outbox like any report, and forgets the question; or it says in its heartbeat that
it has none (`no_outcome`), and then the sweep fails the run. Nothing is written per run unless a run is
in question.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from workers.protocol import keys
from workers.protocol.connection import client

# A question nobody acted on (its task moved on meanwhile) is dropped by the node after this long, and the
# whole hash expires this long after the last question.
ASK_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Ask:
    task_id: str
    task_type: str
    at: float  # epoch seconds, the server's clock


def ask(node: str, asks: dict[str, Ask]) -> None:
    """The server asks `node` about these runs (run id -> Ask). Raises redis.RedisError."""
    if not asks:
        return
    fields = {
        run_id: json.dumps({"task_id": a.task_id, "task_type": a.task_type, "at": a.at}) for run_id, a in asks.items()
    }
    pipe = client().pipeline(transaction=False)
    pipe.hset(keys.run_asks_key(node), mapping=fields)
    pipe.expire(keys.run_asks_key(node), ASK_TTL_SECONDS)
    pipe.execute()  # type: ignore[no-untyped-call]


def asked(node: str) -> dict[str, Ask]:
    """What the server has asked `node` and is still current (older questions are forgotten).
    Raises redis.RedisError."""
    raw: dict[bytes, bytes] = client().hgetall(keys.run_asks_key(node))  # type: ignore[assignment]
    now, found, old = time.time(), {}, []
    for field, value in raw.items():
        run_id = field.decode()
        try:
            body = json.loads(value)
            entry = Ask(str(body["task_id"]), str(body["task_type"]), float(body["at"]))
        except (KeyError, TypeError, ValueError):
            old.append(run_id)  # not something ask() wrote
            continue
        if now - entry.at > ASK_TTL_SECONDS:
            old.append(run_id)
        else:
            found[run_id] = entry
    forget(node, old)
    return found


def forget(node: str, run_ids: list[str]) -> None:
    """The question is settled: answered with a report, or acted on by the server. Raises redis.RedisError."""
    if run_ids:
        client().hdel(keys.run_asks_key(node), *run_ids)
