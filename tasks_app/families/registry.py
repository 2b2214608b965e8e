"""The registry of families' server halves, by task type. Filled by the modules in this package and
by any named in TASKHUB_SERVER_MODULES (load)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

Data = dict[str, Any]
# (task_id, task_data) -> the task_data to store, or raises InvalidInput naming the field.
Check = Callable[[str, Data], Data]
# (task_id, task_data, result): writes the record, in the transaction that completes the task.
Hook = Callable[[str, Data, Data], None]


@dataclass(frozen=True)
class ServerHalf:
    check: Check | None = None
    on_complete: Hook | None = None


_HALVES: dict[str, ServerHalf] = {}
_loaded = False
_BUILT_IN = ("blocks", "cluster", "nodes", "vdags", "volumes")


def register(task_type: str, *, check: Check | None = None, on_complete: Hook | None = None) -> None:
    _HALVES[task_type] = ServerHalf(check=check, on_complete=on_complete)


def load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in [*(f"tasks_app.families.{name}" for name in _BUILT_IN), *settings.TASKHUB_SERVER_MODULES]:
        importlib.import_module(module)


def check(task_type: str, task_id: str, data: Data) -> Data:
    load()
    half = _HALVES.get(task_type)
    return half.check(task_id, data) if half is not None and half.check is not None else data


def completion_hook(task_type: str) -> Hook | None:
    load()
    half = _HALVES.get(task_type)
    return half.on_complete if half is not None else None
