"""JSON parsing for /api/v1 that answers 400, never 500, to any body, and refuses what the database
or a renderer cannot round-trip (tasks_app/tasks/validation.py: storable) before a view reads it."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from tasks_app.tasks import validation


class SafeJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(validation.too_deep("request body")) from exc
        self.check(data)
        return data

    def check(self, data: Any) -> None:
        # InvalidInput is a 400 whose message names the field (tasks_app/api/errors.py).
        if isinstance(data, dict):
            validation.request_body(data)
        else:
            validation.storable(data, "request body")


class BulkJSONParser(SafeJSONParser):
    """POST /api/v1/tasks/bulk/ ({"tasks": [...]}): each item is checked on its own, as a single create's
    body (tasks_app/api/serializers.py: validate_each), so that one bad item is that item's error rather
    than the whole request's, and an item's nesting counts from the item, as a single create's does."""

    def check(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            validation.request_body({k: v for k, v in data.items() if k != "tasks"})
            return
        super().check(data)
