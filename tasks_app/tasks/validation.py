"""Checks on client input, shared by the seed API and the /api/v1 serializers.

Each raises InvalidInput with a message that names the field and the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

from tasks_app.errors import InvalidInput
from workers.protocol.status import ALIASES, CLIENT_VALUES, STATUS_VALUES, Status, canonical

# Ids appear in URLs (/task/<id>), so keep them to URL-safe characters.
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_TASK_TYPE_MAX = 64
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


def require_object(body: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"The {what} must be a JSON object, got {_json_kind(body)}")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def task_id(value: Any, field: str = "task_id") -> str:
    if not isinstance(value, str) or not _TASK_ID_RE.fullmatch(value):
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
    """Refuse what the database or a renderer cannot round-trip, the same on SQLite and PostgreSQL:
    NUL characters (PostgreSQL text refuses them), lone surrogates such as "\\ud800" (valid JSON
    escapes, but not text: UTF-8 cannot encode them, so PostgreSQL, DRF's renderer and the admin all
    fail on them later), NaN/Infinity (not JSON at all), and nesting deeper than
    TASKHUB_MAX_JSON_DEPTH (the admin and the renderers recurse). Caught here, at the edge, so the
    client gets a 400 naming the field rather than a 500, or a lost update, later."""
    limit = int(settings.TASKHUB_MAX_JSON_DEPTH)
    stack: list[tuple[Any, int, str]] = [(value, 0, field)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise InvalidInput(f"'{path}' is NaN or Infinity, which JSON does not allow")
        elif isinstance(item, dict | list):
            if depth >= limit:
                raise InvalidInput(f"{too_deep(field)}, at '{path}'")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(str(key), f"{path}.{key!s}" if _printable(str(key)) else path)
                    stack.append((child, depth + 1, f"{path}.{key}"))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def too_deep(field: str) -> str:
    return f"'{field}' is nested deeper than {settings.TASKHUB_MAX_JSON_DEPTH} levels (TASKHUB_MAX_JSON_DEPTH)"


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise InvalidInput(f"'{_safe(path)}' contains a NUL character, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise InvalidInput(
            f"'{_safe(path)}' contains a lone surrogate (\\u{ord(bad):04x}), which is not text and cannot be stored; "
            "encode characters outside the Basic Multilingual Plane as a surrogate pair"
        ) from exc


def _printable(text: str) -> bool:
    return "\x00" not in text and text.encode("utf-8", "replace").decode("utf-8") == text


def _safe(path: str) -> str:
    """The path as text a message can carry (a key may be the very thing that cannot be encoded)."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def repaired(value: Any) -> Any:
    """A copy of JSON data that storable() accepts, for data no client sent (a node's report, whose
    error text may carry a file name's undecodable bytes as lone surrogates): bad text is escaped
    (backslashreplace, NUL as \\x00), NaN and Infinity become strings, and what is nested too deeply
    becomes its JSON text. Refusing it instead would lose a run's outcome."""
    limit = int(settings.TASKHUB_MAX_JSON_DEPTH)

    def fix(item: Any, depth: int) -> Any:
        if isinstance(item, str):
            return item.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
        if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            return str(item)
        if isinstance(item, dict | list) and depth >= limit:
            return fix(json.dumps(item, default=str), depth)
        if isinstance(item, dict):
            return {fix(str(k), depth): fix(v, depth + 1) for k, v in item.items()}
        if isinstance(item, list):
            return [fix(v, depth + 1) for v in item]
        return item

    return fix(value, 0)


def is_storable(value: Any) -> bool:
    try:
        storable(value, "value")
    except InvalidInput:
        return False
    return True


def request_body(body: dict[str, Any]) -> dict[str, Any]:
    """A whole JSON request body, checked field by field with storable() (every write path calls this
    on what it parsed, before anything reads a field)."""
    for name, value in body.items():
        storable(value, _safe(str(name)))
        _check_text(str(name), _safe(str(name)))
    return body


def no_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise InvalidInput(f"'{field}' contains a NUL character")
    return value


def task_type(value: Any, field: str = "task_type") -> str:
    """Required, as the reference service's callers always send one: 1-64 characters, no control
    characters (it is shown in lists, the admin and the CLI, and used as a metrics label). The OpenAPI
    schema states the same rule as a pattern (tasks_app/api/schema.py: TASK_TYPE_PATTERN)."""
    if not isinstance(value, str) or not 0 < len(value) <= _TASK_TYPE_MAX or _CONTROL_RE.search(value):
        raise InvalidInput(
            f"'{field}' is required: a string of 1-{_TASK_TYPE_MAX} characters, no control characters "
            "(e.g. 'volume_create')"
        )
    if any(end.isspace() or end == "\ufeff" for end in (value[0], value[-1])):  # the schema's \s has U+FEFF
        # "volume_create " is not volume_create: stored as sent, it would be a record of another type.
        raise InvalidInput(f"'{field}' must not begin or end with a space (got {value!r})")
    _check_text(value, field)
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
