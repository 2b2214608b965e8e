"""The task-type registry, shared by the server (validation, participants) and the nodes (handlers).

A task type is registered once, in a module under workers/handlers/ (or a module named in
TASKHUB_HANDLER_MODULES), with:
  validate(task_data) -> task_data   checks the payload at create time (no database, no I/O)
  participants(task_data) -> [node]  the nodes taking part; the first runs the task by default
  run(ctx, task_data) -> result      runs on the assigned node; its return value is the result
  part(ctx, payload) -> result       optional: the per-node piece that run() fans out
  compensate(ctx, payload) -> result optional: undoes a part on a node where it succeeded, when
                                     the task fails for good (rollback)
  max_retries                        automatic retries of recoverable errors (RecoverableError,
                                     an offline or silent participant); TASKHUB_RETRY_LIMITS overrides
  reassignable                       may move to another participant when its node dies
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from workers.context import RunContext

Payload = dict[str, Any]
Result = dict[str, Any]


def _no_participants(task_data: Payload) -> list[str]:
    return []


@dataclass(frozen=True)
class TaskType:
    name: str
    run: Callable[[RunContext, Payload], Result]
    validate: Callable[[Payload], Payload]
    participants: Callable[[Payload], list[str]] = _no_participants
    part: Callable[[RunContext, Payload], Result] | None = None
    description: str = ""
    compensate: Callable[[RunContext, Payload], Result] | None = None
    max_retries: int = 3
    reassignable: bool = False

    def retry_limit(self) -> int:
        limits: dict[str, int] = settings.TASKHUB_RETRY_LIMITS
        return int(limits.get(self.name, self.max_retries))


_REGISTRY: dict[str, TaskType] = {}
_loaded = False


def register(
    name: str,
    *,
    validate: Callable[[Payload], Payload],
    participants: Callable[[Payload], list[str]] = _no_participants,
    part: Callable[[RunContext, Payload], Result] | None = None,
    description: str = "",
    compensate: Callable[[RunContext, Payload], Result] | None = None,
    max_retries: int = 3,
    reassignable: bool = False,
) -> Callable[[Callable[[RunContext, Payload], Result]], Callable[[RunContext, Payload], Result]]:
    """Decorator for a task type's run function."""

    def decorate(run: Callable[[RunContext, Payload], Result]) -> Callable[[RunContext, Payload], Result]:
        _REGISTRY[name] = TaskType(
            name, run, validate, participants, part, description or (run.__doc__ or ""), compensate, max_retries,
            reassignable,
        )  # fmt: skip
        return run

    return decorate


def load() -> None:
    """Import the built-in handler modules and any named in TASKHUB_HANDLER_MODULES, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in ["workers.handlers", *settings.TASKHUB_HANDLER_MODULES]:
        importlib.import_module(module)


def get(name: str) -> TaskType | None:
    load()
    return _REGISTRY.get(name)


def known() -> list[str]:
    load()
    return sorted(_REGISTRY)
