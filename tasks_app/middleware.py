"""The project's middlewares: bodies over TASKHUB_MAX_BODY_BYTES and NUL characters refused before anything
reads them, and the database down answered as a 503 in JSON."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from tasks_app.api.errors import database_unavailable
from tasks_app.errors import database_down


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.TASKHUB_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"success": False, "message": "Invalid Content-Length header"}, status=400)
        if length > limit:
            return JsonResponse(
                {"success": False, "message": f"Request body is {length} bytes; the limit is {limit} bytes"},
                status=413,
            )
        return self.get_response(request)


class RejectNulMiddleware:
    """A NUL character in a path or query string is never a real id or filter, and PostgreSQL
    refuses it in text: answer 400 here instead of a 500 from the database."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any("\x00" in v for _, values in request.GET.lists() for v in values):
            return JsonResponse({"success": False, "message": "NUL characters are not allowed in URLs"}, status=400)
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """A view that met the database down or unreachable answers 503 in its surface's JSON envelope with
    Retry-After (tasks_app/api/errors.py database_unavailable), never Django's HTML 500. Every view that
    is not DRF's: the seed API, the admin and the dashboard, /metrics. DRF's views answer the same from
    their own exception handler (api_exception_handler), since DRF catches their exceptions first;
    /healthz reports the database's state itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_down(exception):
            return None  # a bug is still a 500, with its traceback
        return database_unavailable(request, exception)
