"""Payload checks for handlers' validate functions. Each raises PayloadError naming the field."""

from __future__ import annotations

import re
from typing import Any

from workers.protocol.errors import PayloadError

# Match these with fullmatch: Python's `$` also matches before a final newline, so `match` takes "node1\n".
# The patterns keep ^...$ for the OpenAPI document, where `$` is the end of the string.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _matching(data: dict[str, Any], field: str, pattern: re.Pattern[str], what: str) -> str:
    value = data.get(field)
    if value is None:
        raise PayloadError(field, "is required")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise PayloadError(field, f"must be {what}")
    return value


def name(data: dict[str, Any], field: str) -> str:
    return _matching(data, field, NAME_RE, "a name of 1-64 letters, digits, '.', '_' or '-'")


def positive_int(data: dict[str, Any], field: str, *, maximum: int = 1 << 31) -> int:
    value = data.get(field)
    if value is None:
        raise PayloadError(field, "is required")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= maximum:
        raise PayloadError(field, f"must be a whole number from 1 to {maximum}")
    return value


def name_list(data: dict[str, Any], field: str) -> list[str]:
    value = data.get(field)
    if not isinstance(value, list) or not value:
        raise PayloadError(field, "must be a non-empty list of node names")
    names = [name({field: v}, field) for v in value]
    if len(set(names)) != len(names):
        raise PayloadError(field, "lists a node more than once")
    return names


def one_node(data: dict[str, Any]) -> list[str]:
    return [str(data["node"])]


# Allocation ids are the task ids of block_alloc tasks (tasks_app/tasks/validation.py: task_id).
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def identifier(data: dict[str, Any], field: str) -> str:
    return _matching(data, field, ID_RE, "an id of 1-64 letters, digits, '.', '_', ':' or '-'")
