"""Serializer fields shared by the /api/v1 serializers."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class TextField(serializers.CharField):
    """DRF's CharField, except that it takes a JSON string only: DRF's turns 0 or true into "0" and
    "True", so a body the schema (and the seed API) refuses would be stored. A field that names
    something (a task id, a type, a node) is text, never a number that happens to print. Nor is it
    trimmed: DRF's would store "t1" for "t1\\n", where the seed API refuses it; a name is checked as sent."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's also takes 0, 1, "yes", "off" and more, which the schema says
    are not booleans."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class NameRelatedField(serializers.SlugRelatedField[Any]):
    """A related object named by its `name`, given as a JSON string only: DRF's SlugRelatedField looks up
    whatever it gets, so `"cluster": 0` found a cluster named "0", against the schema's string."""

    default_error_messages = {
        **serializers.SlugRelatedField.default_error_messages,
        "invalid": "Must be a name, as a JSON string.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="name", **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
