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
        # InvalidInput is a 400 whose message names the field (tasks_app/api/errors.py).
        if isinstance(data, dict):
            validation.request_body(data)
        else:
            validation.storable(data, "request body")
        return data
