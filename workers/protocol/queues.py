"""Task and queue names, defined once, and the one Celery router (CELERY_TASK_ROUTES).

Node work goes to the queue of the node named in the message, so it runs exactly where the task
says; everything else runs on the server queue, next to the database.
"""

from __future__ import annotations

from typing import Any

SERVER_QUEUE = "taskhub.server"  # sweeps and other work that needs the database
NODE_QUEUE_PREFIX = "node."

EXECUTE_TASK = "taskhub.execute"  # one run of a task's handler on its assigned node
EXECUTE_PART_TASK = "taskhub.execute_part"  # one participant's piece of a fanned-out run
SWEEP_TASK = "taskhub.sweep_undelivered"
DEAD_NODES_TASK = "taskhub.sweep_dead_nodes"
STALLED_RUNS_TASK = "taskhub.sweep_stalled_runs"  # runs a live node no longer has (tasks_app/fleet/stalled.py)
PURGE_TASK = "taskhub.purge_finished"  # retention: delete old finished tasks (tasks_app/ops/retention.py)

# A message header of taskhub.execute naming its task: a worker that drops a revoked message sees
# only its headers, and must still say which task's run was cancelled.
TASK_ID_HEADER = "taskhub_task_id"


def node_queue(node: str) -> str:
    return f"{NODE_QUEUE_PREFIX}{node}"


def route_task(name: str, args: Any, kwargs: dict[str, Any], options: dict[str, Any], **_: Any) -> dict[str, str]:
    if name in (EXECUTE_TASK, EXECUTE_PART_TASK):
        node = (kwargs or {}).get("node")
        if not node:
            raise ValueError(f"{name} needs a node= keyword argument to be routed")
        return {"queue": node_queue(str(node))}
    return {"queue": SERVER_QUEUE}
