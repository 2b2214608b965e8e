"""Keyset pagination on (created_ns, task_id) for /api/v1/tasks/.

Unlike page numbers or offsets, a keyset never skips or repeats a row while the table grows, and
every page costs what the first does. `next` is the following page's URL while there is one;
`resume` is always the cursor after the last row returned, so a client following new tasks polls
with ?after=<resume> and gets exactly the tasks it has not seen.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from tasks_app.errors import InvalidInput
from tasks_app.tasks.selectors import after_cursor, decode_cursor, encode_cursor


class KeysetPagination(BasePagination):
    page_size = 100
    max_page_size = 1000

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: Any = None) -> list[Any]:
        size_raw = request.query_params.get("page_size")
        try:
            size = int(size_raw) if size_raw else self.page_size
        except ValueError as exc:
            raise InvalidInput("'page_size' must be an integer") from exc
        self.size = max(1, min(size, self.max_page_size))
        after = request.query_params.get("after")
        self.after = after or None
        if after:
            ts, tid = decode_cursor(after)
            queryset = after_cursor(queryset, "created_ns", ts, tid)  # a range the index scan starts at
        rows = list(queryset.order_by("created_ns", "task_id")[: self.size + 1])
        self.more = len(rows) > self.size
        self.rows = rows[: self.size]
        self.request = request
        return self.rows

    def _cursor(self) -> str | None:
        if not self.rows:
            return self.after
        last = self.rows[-1]
        return encode_cursor(last.created_ns, last.task_id)

    def get_paginated_response(self, data: Any) -> Response:
        cursor = self._cursor()
        url = self.request.build_absolute_uri()
        next_url = replace_query_param(url, "after", cursor) if self.more and cursor else None
        return Response({"next": next_url, "resume": cursor, "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "resume": {"type": "string", "nullable": True, "description": "pass as ?after= to continue later"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "a cursor from `next` or `resume`"},
            {"name": "page_size", "in": "query", "required": False, "schema": {"type": "integer"}},
        ]  # fmt: skip
