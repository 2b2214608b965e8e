"""Liveness/readiness: the database and Redis both answer. 503 names what is down ("down", and its check's
error), with Retry-After. Each check is bounded (TASKHUB_DB_CONNECT_TIMEOUT, TASKHUB_REDIS_*_TIMEOUT), so a
probe gets its answer promptly whichever dependency is gone."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from tasks_app.tasks import stream
from workers.protocol.connection import client

log = logging.getLogger(__name__)


def health(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as exc:
        checks["database"] = f"error: {exc}"
    try:
        client().ping()
        checks["redis"] = "ok"
        checks["update_backlog"] = str(stream.backlog())
    except redis.RedisError as exc:
        checks["redis"] = f"error: {exc}"
    down = [name for name in ("database", "redis") if checks[name] != "ok"]
    if not down:
        return JsonResponse({"status": "ok", "checks": checks})
    response = JsonResponse({"status": "degraded", "down": down, "checks": checks}, status=503)
    response["Retry-After"] = str(settings.TASKHUB_RETRY_AFTER_SECONDS)
    log.warning("healthz answered 503: %s", "; ".join(f"{name} {checks[name]}" for name in down))
    response._has_been_logged = True  # type: ignore[attr-defined]  # as a warning, not again by django.request
    return response
