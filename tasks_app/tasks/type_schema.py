"""Reading a task type's task_data JSON Schema (TaskSpec.schema, workers/protocol/schema.py) for the
forms that offer its fields: the admin's add form (tasks_app/admin_type_forms.py) and the browsable
API's skeleton body (tasks_app/api/browsable.py). Only the shape is read, never enforced here: the
type's validate() stays the authority on what it accepts, and its messages are the ones shown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

KINDS = ("string", "integer", "number", "boolean", "array", "object")


def kind_of(schema: Any) -> tuple[str, bool]:
    """The one JSON type a value takes ("any" when the schema allows several or names none), and
    whether null is allowed too (`"type": [t, "null"]`, which validate() reads as the field left out)."""
    if not isinstance(schema, dict):
        return "any", True
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    nullable = "null" in kinds
    rest = [k for k in kinds if k != "null"]
    if len(rest) == 1 and rest[0] in KINDS:
        return str(rest[0]), nullable
    return "any", nullable or kind is None


@dataclass(frozen=True)
class Property:
    """One top-level field of a task_data schema."""

    name: str
    schema: Schema
    required: bool

    @property
    def kind(self) -> str:
        return kind_of(self.schema)[0]

    @property
    def enum(self) -> list[Any] | None:
        values = self.schema.get("enum")
        return list(values) if isinstance(values, list) and values else None

    @property
    def description(self) -> str:
        text = self.schema.get("description")
        return " ".join(text.split()) if isinstance(text, str) else ""


def properties(schema: Any) -> list[Property]:
    """The schema's top-level properties, in its order (the order the type's author wrote them)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return []
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    return [
        Property(name=str(name), schema=sub if isinstance(sub, dict) else {}, required=name in needed)
        for name, sub in schema["properties"].items()
    ]


def example(schema: Any, *, required: bool = True) -> Any:
    """A value to start from for one field: its default, else its first example, constant or enum value,
    else an empty value of its type (null for an optional field that may be null). A placeholder to edit,
    not necessarily valid: an empty name is still refused by validate()."""
    if not isinstance(schema, dict):
        return None
    for key in ("default", "const"):
        if key in schema:
            return copy.deepcopy(schema[key])
    for key in ("examples", "enum"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return copy.deepcopy(values[0])
    kind, nullable = kind_of(schema)
    if nullable and not required:
        return None
    if kind == "object":
        return {prop.name: example(prop.schema, required=prop.required) for prop in properties(schema)}
    if kind == "array":
        items = schema.get("items")
        least = schema.get("minItems")
        wants_one = isinstance(least, int) and least >= 1 and isinstance(items, dict)
        return [example(items)] if wants_one else []
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        if isinstance(low, int | float) and not isinstance(low, bool):
            return int(low) if kind == "integer" else low
        return 0
    return {"string": "", "boolean": False}.get(kind)


def skeleton(schema: Any) -> dict[str, Any]:
    """A task_data object with every top-level property of the schema, each with example()'s value."""
    return {prop.name: example(prop.schema, required=prop.required) for prop in properties(schema)}
