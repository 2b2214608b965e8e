"""JSON Schema pieces for task types' payloads (TaskSpec.schema), matching the checks in payload.py.

A type's schema describes what its validate() accepts, for clients and the OpenAPI document
(GET /api/v1/task-types/, components TaskData_<type>). validate() stays the authority: rules across
fields (unique vertex ids, edges between known vertices, no cycle) are beyond what a schema says.
Written in the subset that draft 2020-12 and OpenAPI 3.0 share, plus `"type": [..., "null"]`, which the
OpenAPI hook turns into `nullable` (tasks_app/api/task_types.py).
"""

from __future__ import annotations

from typing import Any

from workers.protocol.payload import ID_RE, NAME_RE

Schema = dict[str, Any]

# payload.name and payload.identifier. Python's `$` also matches before a final newline; the schemas keep
# the same pattern so a Python validator (jsonschema) agrees with validate() exactly.
NAME: Schema = {"type": "string", "pattern": NAME_RE.pattern, "description": "1-64 letters, digits, '.', '_', '-'"}
IDENTIFIER: Schema = {
    "type": "string",
    "pattern": ID_RE.pattern,
    "description": "1-64 letters, digits, '.', '_', ':', '-'",
}


def positive_int(maximum: int = 1 << 31) -> Schema:
    """payload.positive_int."""
    return {"type": "integer", "minimum": 1, "maximum": maximum}


def name_list(what: str = "node names") -> Schema:
    """payload.name_list: non-empty, each a name, none twice."""
    return {"type": "array", "items": NAME, "minItems": 1, "uniqueItems": True, "description": what}


def nullable(schema: Schema) -> Schema:
    """The schema, or null (validate() reads a null as the field left out)."""
    return {**schema, "type": [schema["type"], "null"]}


def payload(properties: dict[str, Schema], required: list[str], **extra: Any) -> Schema:
    """A task_data object. Fields a type does not know about are kept and ignored, so any are allowed."""
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": True, **extra}
