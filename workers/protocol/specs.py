"""The registry of task-type specs: what the server needs to accept and place a task, and what a node
needs to run it. A family module (workers/families/, or one named in TASKHUB_HANDLER_MODULES)
registers each of its types once, with:

  validate(task_data) -> task_data   checks the payload at create time (no database, no I/O); raises
                                     PayloadError naming the field
  participants(task_data) -> [node]  the nodes taking part; the first runs the task by default
  order_key(task_data) -> str        tasks sharing a key run one at a time, in creation order, on one
                                     node ("" for none)
  run(ctx, task_data) -> result      runs on the assigned node; its return value is the result
  part(ctx, payload) -> result       optional: the per-node piece that run() fans out
  compensate(ctx, payload) -> result optional: undoes a part, when the task fails for good (rollback)
                                     or is cancelled after the part was done
  max_retries                        automatic retries of recoverable errors; TASKHUB_RETRY_LIMITS overrides
  reassignable                       may move to another participant when its node dies
  run_timeout                        optional: seconds a run may stay in_progress before the server fails
                                     it (RunTimeout) and voids it; TASKHUB_RUN_TIMEOUTS overrides
  schema                             optional: task_data as JSON Schema (workers/protocol/schema.py), what
                                     validate accepts; published by GET /api/v1/task-types/
  order_key_doc                      optional: the ordering key's shape, e.g. "volume:<cluster>:<name>"

The server half of a family (create-time checks against the database, the completion hook that writes
its record) is registered by the same name in tasks_app/families/.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from workers.protocol.context import RunContext

Payload = dict[str, Any]
Result = dict[str, Any]
Step = Callable[[RunContext, Payload], Result]


def _no_participants(task_data: Payload) -> list[str]:
    return []


def _no_order(task_data: Payload) -> str:
    return ""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    run: Step
    validate: Callable[[Payload], Payload]
    participants: Callable[[Payload], list[str]] = _no_participants
    part: Step | None = None
    description: str = ""
    compensate: Step | None = None
    max_retries: int = 3
    reassignable: bool = False
    order_key: Callable[[Payload], str] = _no_order
    run_timeout: float | None = None
    schema: dict[str, Any] | None = field(default=None, hash=False)
    order_key_doc: str = ""

    def retry_limit(self) -> int:
        limits: dict[str, int] = settings.TASKHUB_RETRY_LIMITS
        return int(limits.get(self.name, self.max_retries))

    def timeout(self) -> float | None:
        """Seconds a run of this type may stay in_progress (None: no limit). TASKHUB_RUN_TIMEOUTS wins;
        0 there turns the type's own limit off."""
        timeouts: dict[str, float] = settings.TASKHUB_RUN_TIMEOUTS
        limit = timeouts.get(self.name, self.run_timeout)
        return float(limit) if limit else None


_REGISTRY: dict[str, TaskSpec] = {}
_loaded = False


def register(
    name: str,
    *,
    validate: Callable[[Payload], Payload],
    participants: Callable[[Payload], list[str]] = _no_participants,
    part: Step | None = None,
    description: str = "",
    compensate: Step | None = None,
    max_retries: int = 3,
    reassignable: bool = False,
    order_key: Callable[[Payload], str] = _no_order,
    run_timeout: float | None = None,
    schema: dict[str, Any] | None = None,
    order_key_doc: str = "",
) -> Callable[[Step], Step]:
    """Decorator for a task type's run function."""

    def decorate(run: Step) -> Step:
        _REGISTRY[name] = TaskSpec(
            name=name,
            run=run,
            validate=validate,
            participants=participants,
            part=part,
            description=description or (run.__doc__ or ""),
            compensate=compensate,
            max_retries=max_retries,
            reassignable=reassignable,
            order_key=order_key,
            run_timeout=run_timeout,
            schema=schema,
            order_key_doc=order_key_doc,
        )
        return run

    return decorate


def load() -> None:
    """Import the built-in families and any module named in TASKHUB_HANDLER_MODULES, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in ["workers.families", *settings.TASKHUB_HANDLER_MODULES]:
        importlib.import_module(module)


def get(name: str) -> TaskSpec | None:
    load()
    return _REGISTRY.get(name)


def known() -> list[str]:
    load()
    return sorted(_REGISTRY)
