"""(g) The heartbeats of many nodes from one process: `python -m bench.fleet_beats <state dir> <prefix> <n>`.

Runs under the node's settings (taskhub/settings_node.py: Redis only, no database), as a node worker
does, and sends the heartbeat of each node <prefix>0000, <prefix>0001, ... (n of them) every
TASKHUB_HEARTBEAT_SECONDS, their beats spread evenly over the interval. Each beat is what the thread
of workers/node/heartbeat.py does for a node worker: answer the server's questions about runs
(workers/node/lifeline.py; one HGETALL when there are none), list the runs held and undelivered
(workers/node/running.py; this process holds none), then beat(): the node's alive key with its time
to live, and the heartbeat entry on the update stream, which the writers turn into
Node.last_heartbeat. The nodes share one outbox, in the state dir: reading it is a node's local cost,
which a real node pays on its own machine.

It prints `round <n> <beats so far> <seconds behind schedule at worst> <failed beats>` after each
interval, and runs until it is stopped (SIGTERM).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def node_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def main(argv: list[str]) -> None:
    import django

    django.setup()
    import redis
    from django.conf import settings

    from workers.node import lifeline, running
    from workers.node.heartbeat import beat

    state_dir, prefix, n = Path(argv[0]), argv[1], int(argv[2])
    names = node_names(prefix, n)
    state_dir.mkdir(parents=True, exist_ok=True)
    interval = float(settings.TASKHUB_HEARTBEAT_SECONDS)
    step = interval / max(1, len(names))
    started = time.monotonic()
    beats = failed = 0
    rnd = 0
    while True:
        behind = 0.0
        for k, name in enumerate(names):
            due = started + rnd * interval + k * step
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                behind = max(behind, -wait)
            try:
                no_outcome = lifeline.answer(name, state_dir)
                runs = running.runs_report(state_dir, time.monotonic() - started, no_outcome)
                beat(name, {"data_dir": f"/srv/taskhub/{name}", "capacity_blocks": 0, "runs": runs})
                beats += 1
            except redis.RedisError:
                failed += 1
        rnd += 1
        print(f"round {rnd} {beats} {behind:.3f} {failed}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
