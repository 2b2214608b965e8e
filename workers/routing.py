"""The one Celery router (CELERY_TASK_ROUTES). Every message's queue is decided here.

Node work goes to the queue of the node named in the message, so it runs exactly where the task
says; everything else runs on the server queue, next to the database.
"""

from __future__ import annotations

from typing import Any

from workers.queues import EXECUTE_PART_TASK, EXECUTE_TASK, SERVER_QUEUE, node_queue


def route_task(name: str, args: Any, kwargs: dict[str, Any], options: dict[str, Any], **_: Any) -> dict[str, str]:
    if name in (EXECUTE_TASK, EXECUTE_PART_TASK):
        node = (kwargs or {}).get("node")
        if not node:
            raise ValueError(f"{name} needs a node= keyword argument to be routed")
        return {"queue": node_queue(str(node))}
    return {"queue": SERVER_QUEUE}
