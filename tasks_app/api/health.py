"""Liveness/readiness: the database and Redis both answer."""

from __future__ import annotations

import redis
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from tasks_app.tasks import stream
from workers.protocol.connection import client


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
    healthy = checks["database"] == "ok" and checks["redis"] == "ok"
    return JsonResponse({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)
