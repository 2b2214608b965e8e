"""Error envelopes. The seed API answers {"success": false, "message": ...}; /api/v1 uses DRF's shape."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tasks_app.errors import TaskhubError


def seed_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"success": False, "message": message}, status=status)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus our domain errors mapped to their HTTP status with a readable detail."""
    if isinstance(exc, TaskhubError):
        return Response({"detail": exc.message}, status=exc.http_status)
    if isinstance(exc, exceptions.ParseError):
        return Response({"detail": f"Malformed JSON: {exc.detail}"}, status=400)
    return exception_handler(exc, context)
