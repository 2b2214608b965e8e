"""(c) GET /tasks?task_type=X&task_status=Y, first page, on the 1M-row table: p50/p99."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from bench.config import BULK_TYPE_PREFIX, STATUSES, Config


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows_per_page: int


def _pairs(cfg: Config) -> list[tuple[str, str]]:
    """Every (type, status) pair in turn, so no single pair's pages stay hot in a cache of ours."""
    return [(f"{BULK_TYPE_PREFIX}{t}", s) for t in range(cfg.task_types) for s in STATUSES]


def _summary(seconds: list[float], rows: int) -> Latency:
    ms = sorted(s * 1000 for s in seconds)
    return Latency(len(ms), ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1], rows)


def over_http(cfg: Config, host: str, port: int) -> Latency:
    """Sequential requests, one at a time, each on a new connection (gunicorn's sync workers close them)."""
    pairs = _pairs(cfg)
    warmup = len(pairs)
    timings: list[float] = []
    rows = -1
    for i in range(warmup + cfg.latency_requests):
        task_type, status = pairs[i % len(pairs)]
        url = "/tasks?" + urlencode({"task_type": task_type, "task_status": status})
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status} {body[:300]!r}")
        page = json.loads(body)
        if rows == -1 or len(page["data"]) < rows:
            rows = len(page["data"])
        if i >= warmup:
            timings.append(elapsed)
    return _summary(timings, rows)


def in_process(cfg: Config) -> Latency:
    """The same query through selectors.task_list_page, in this process (no HTTP, no JSON)."""
    from django.conf import settings

    from tasks_app.tasks.selectors import task_list_page

    pairs = _pairs(cfg)
    timings: list[float] = []
    rows = -1
    for i in range(len(pairs) + cfg.latency_requests):
        task_type, status = pairs[i % len(pairs)]
        started = time.perf_counter()
        page = task_list_page(task_type=task_type, task_status=status, limit=settings.TASKHUB_PAGE_SIZE)
        elapsed = time.perf_counter() - started
        if rows == -1 or len(page.tasks) < rows:
            rows = len(page.tasks)
        if i >= len(pairs):
            timings.append(elapsed)
    return _summary(timings, rows)


def explain(cfg: Config) -> str:
    """The plan PostgreSQL picks for one first page (for the notes)."""
    from django.conf import settings
    from django.db import connection

    from tasks_app.tasks.selectors import task_filter

    task_type, status = _pairs(cfg)[0]
    qs = task_filter(task_type=task_type, task_status=status).order_by("task_create_timestamp", "task_id")
    query, params = qs[: settings.TASKHUB_PAGE_SIZE + 1].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {query}", params)
        return "\n".join(str(r[0]) for r in cursor.fetchall())
