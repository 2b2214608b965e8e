"""Checks on client input, shared by the seed API and the /api/v1 serializers.

Each raises InvalidInput with a message that names the field and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from tasks_app.errors import InvalidInput
from workers.protocol.status import ALIASES, CLIENT_VALUES, STATUS_VALUES, Status, canonical

# Ids appear in URLs (/task/<id>), so keep them to URL-safe characters.
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_TASK_TYPE_MAX = 64


def require_object(body: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"The {what} must be a JSON object, got {_json_kind(body)}")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def task_id(value: Any, field: str = "task_id") -> str:
    if not isinstance(value, str) or not _TASK_ID_RE.match(value):
        raise InvalidInput(
            f"'{field}' must be a string of 1-64 letters, digits, '.', '_', ':' or '-' (a uuid4 by default)"
        )
    return value


def json_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"'{field}' must be a JSON object, got {_json_kind(value)}")
    storable(value, field)
    return value


def storable(value: Any, field: str) -> None:
    """Refuse what a JSON column cannot keep: NUL characters (PostgreSQL text) and NaN/Infinity
    (not JSON at all). Caught here, at the API, rather than by the database in a writer's batch."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidInput(f"'{field}' contains a NUL character, which cannot be stored")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise InvalidInput(f"'{field}' contains NaN or Infinity, which JSON does not allow")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def no_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise InvalidInput(f"'{field}' contains a NUL character")
    return value


def task_type(value: Any, field: str = "task_type") -> str:
    if not isinstance(value, str) or len(value) > _TASK_TYPE_MAX:
        raise InvalidInput(f"'{field}' must be a string of at most {_TASK_TYPE_MAX} characters")
    return value


def status(value: Any, field: str = "task_status") -> str:
    """A status a client may write, by its name or a documented alias ("complete" is "completed"),
    in any case. Returns the canonical name."""
    found = canonical(value)
    if found == Status.CANCELLING:
        raise InvalidInput(f"'{field}': 'cancelling' is set by a cancel (POST /api/v1/tasks/<id>/cancel/), not written")
    if found is None:
        aliases = ", ".join(f"{alias!r} for {target.value!r}" for alias, target in ALIASES.items())
        raise InvalidInput(f"'{field}' must be one of {', '.join(CLIENT_VALUES)} (or {aliases}); got {value!r}")
    return found


def status_filter(value: Any, field: str = "task_status") -> str:
    """A status to filter by: any status (cancelling too), by its name or an alias."""
    found = canonical(value)
    if found is None:
        raise InvalidInput(f"'{field}' must be one of {', '.join(STATUS_VALUES)}; got {value!r}")
    return found


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"'{field}' must be true or false, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
