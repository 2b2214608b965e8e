"""Error envelopes. The seed API answers {"success": false, "message": ...}; /api/v1 uses DRF's shape.

A dependency that is down is a 503 with Retry-After on every surface: Redis for /task_update
(UpdateQueueUnavailable), the database for everything (database_unavailable, from
tasks_app/middleware.py for plain Django views and from api_exception_handler for DRF's, which catches
its views' exceptions before any middleware sees them)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from tasks_app.errors import TaskhubError, database_down

log = logging.getLogger(__name__)
R = TypeVar("R", bound=HttpResponse)


def seed_error(message: str, status: int) -> JsonResponse:
    return _retry_later(JsonResponse({"success": False, "message": message}, status=status))


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus our domain errors mapped to their HTTP status with a readable detail, and the
    database down as a 503 (a 503 always with Retry-After)."""
    if isinstance(exc, TaskhubError):
        return _retry_later(Response({"detail": exc.message, **(exc.extra or {})}, status=exc.http_status))
    if isinstance(exc, exceptions.ParseError):
        return Response({"detail": f"Malformed JSON: {exc.detail}"}, status=400)
    if database_down(exc):
        request = context.get("request")
        _log_database_down(exc, request)
        set_rollback()
        return _logged(_retry_later(Response({"detail": _database_down_message()}, status=503)))
    return exception_handler(exc, context)


def database_unavailable(request: HttpRequest, exc: Exception) -> JsonResponse:
    """The 503 for a plain Django view (the seed API, the admin, /metrics) that met the database down:
    the seed API's envelope on its paths (tasks_app/urls.py names them seed-*), DRF's everywhere else."""
    _log_database_down(exc, request)
    match = request.resolver_match
    message = _database_down_message()
    if match is not None and (match.url_name or "").startswith("seed-"):
        return _logged(seed_error(message, 503))
    return _logged(_retry_later(JsonResponse({"detail": message}, status=503)))


def _database_down_message() -> str:
    # The driver's text stays in the log: it names hosts and ports a client has no business knowing.
    return f"The database is unavailable; try again in {settings.TASKHUB_RETRY_AFTER_SECONDS} seconds"


def _log_database_down(exc: Exception, request: Any) -> None:
    # One line at WARNING per request, without a traceback: in an outage every request fails alike, and
    # a traceback each would bury the one line that says what is wrong.
    where = f"{request.method} {request.path}" if request is not None else "a request"
    log.warning("database unavailable, %s answered 503: %s: %s", where, type(exc).__name__, exc)


def _retry_later(response: R) -> R:
    if response.status_code == 503:
        response["Retry-After"] = str(settings.TASKHUB_RETRY_AFTER_SECONDS)
    return response


def _logged(response: R) -> R:
    # Logged above, as a warning: Django's own flag (django.utils.log.log_response) keeps django.request
    # from logging the 503 again as an error.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
