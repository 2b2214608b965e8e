"""(g) The filtered list at a table size: first pages and cursor follows, in process and over HTTP.

Runs as a child, `python -m bench.growth_lists`, with DATABASE_URL naming the database to measure (the
1M-row bench database, or section (g)'s 10M-row one), so that both sizes are measured by the same code
in a process of the same shape. It prints one line, `GROWTH_LISTS <json>`.

* first page: `GET /tasks?task_type=X&task_status=Y` (selectors.task_list_page in process; the seed
  endpoint over HTTP) and `/api/v1/tasks/?task_type=X&task_status=Y` (the DRF view, in process:
  filters, keyset pagination, serializer, JSON rendering), cycling through every (type, status) pair.
* cursor follow: the next page after a cursor at a random point of the pair's list (page 2 and page
  20,000 cost the same with a keyset, and random points reach the pages no earlier sample warmed up).
* the dashboard's per-type and status counts (dashboard_selectors.task_counts), which grow with the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from bench.config import BULK_TYPE_PREFIX, STATUSES

MARK = "GROWTH_LISTS "
_USER = "bench-growth"  # a staff account for the v1 view, made and removed by this child


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows: int  # the fewest rows a page had


@dataclass(frozen=True)
class _Point:
    task_type: str
    status: str
    seed_cursor: str
    v1_cursor: str


def summary(seconds: list[float], rows: int) -> Latency:
    ms = sorted(s * 1000 for s in seconds)
    return Latency(len(ms), ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1], rows)


def pairs(task_types: int) -> list[tuple[str, str]]:
    return [(f"{BULK_TYPE_PREFIX}{t}", s) for t in range(task_types) for s in STATUSES]


def _points(task_types: int, n: int) -> list[_Point]:
    """n random points, cycling through the pairs: a cursor of each API at the same place in the list."""
    from django.db.models import Max, Min

    from tasks_app.models import GlobalTask
    from tasks_app.tasks.selectors import encode_cursor

    rng = random.Random(10)  # the same points every run
    spans = []
    for task_type, status in pairs(task_types):
        b = GlobalTask.objects.filter(task_type=task_type, task_status=status).aggregate(
            ts_lo=Min("task_create_timestamp"), ts_hi=Max("task_create_timestamp"),
            ns_lo=Min("created_ns"), ns_hi=Max("created_ns"),
        )  # fmt: skip
        spans.append((task_type, status, b))
    points = []
    for i in range(n):
        task_type, status, b = spans[i % len(spans)]
        f = rng.random() * 0.9  # anywhere but the last tenth, so that every page is a full one
        ts = int(b["ts_lo"] + f * (b["ts_hi"] - b["ts_lo"]))
        ns = int(b["ns_lo"] + f * (b["ns_hi"] - b["ns_lo"]))
        # An empty id sorts before every id: the page starts at the first task of that instant.
        points.append(_Point(task_type, status, encode_cursor(ts, ""), encode_cursor(ns, "")))
    return points


def _timed(calls: list[Callable[[], int]], warmup: int) -> Latency:
    """Each call returns the rows of its page; the first `warmup` calls are not counted."""
    timings: list[float] = []
    rows = -1
    for i, call in enumerate(calls):
        started = time.perf_counter()
        got = call()
        elapsed = time.perf_counter() - started
        rows = got if rows == -1 else min(rows, got)
        if i >= warmup:
            timings.append(elapsed)
    return summary(timings, rows)


# --- in process ------------------------------------------------------------------------------------


def _seed_page(task_type: str, status: str, after: str | None = None) -> Callable[[], int]:
    from django.conf import settings

    from tasks_app.tasks.selectors import task_list_page

    def call() -> int:
        page = task_list_page(task_type=task_type, task_status=status, after=after, limit=settings.TASKHUB_PAGE_SIZE)
        return len(page.tasks)

    return call


def _v1_page(view: Any, user: Any, task_type: str, status: str, after: str | None = None) -> Callable[[], int]:
    from rest_framework.test import APIRequestFactory, force_authenticate

    params = {"task_type": task_type, "task_status": status}
    if after is not None:
        params["after"] = after
    factory = APIRequestFactory()

    def call() -> int:
        request = factory.get("/api/v1/tasks/", params, HTTP_HOST="127.0.0.1")
        force_authenticate(request, user=user)
        response = view(request)
        response.render()
        if response.status_code != 200:
            raise RuntimeError(f"/api/v1/tasks/ {params}: HTTP {response.status_code} {response.content[:300]!r}")
        return len(json.loads(response.content)["results"])

    return call


def _task_counts_ms() -> float:
    from tasks_app.ops.dashboard_selectors import task_counts

    times = []
    for _ in range(3):
        started = time.perf_counter()
        task_counts()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _explain_v1_follow(point: _Point) -> str:
    from django.db import connection

    from tasks_app.tasks.selectors import after_cursor, decode_cursor, task_filter

    ns, tid = decode_cursor(point.v1_cursor)
    qs = task_filter(task_type=point.task_type, task_status=point.status)
    qs = after_cursor(qs, "created_ns", ns, tid).order_by("created_ns", "task_id")  # as KeysetPagination does
    query, params = qs[:101].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {query}", params)
        return "\n".join(str(r[0]) for r in cursor.fetchall())


# --- over HTTP -------------------------------------------------------------------------------------


def _http_page(host: str, port: int, task_type: str, status: str, after: str | None = None) -> Callable[[], int]:
    params = {"task_type": task_type, "task_status": status}
    if after is not None:
        params["after"] = after
    url = "/tasks?" + urlencode(params)

    def call() -> int:
        conn = http.client.HTTPConnection(host, port, timeout=10)  # gunicorn's sync workers close it anyway
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status} {body[:300]!r}")
        return len(json.loads(body)["data"])

    return call


def measure(task_types: int, samples: int, http_at: tuple[str, int] | None) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from tasks_app.api.v1 import TaskViewSet

    all_pairs = pairs(task_types)
    firsts = [all_pairs[i % len(all_pairs)] for i in range(len(all_pairs) + samples)]
    points = _points(task_types, samples)
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=_USER, defaults={"is_staff": True})
    view = TaskViewSet.as_view({"get": "list"})
    out: dict[str, Any] = {}
    try:
        warm = len(all_pairs)
        out["seed_first"] = _timed([_seed_page(t, s) for t, s in firsts], warm)
        out["seed_follow"] = _timed([_seed_page(p.task_type, p.status, p.seed_cursor) for p in points], 0)
        out["v1_first"] = _timed([_v1_page(view, user, t, s) for t, s in firsts], warm)
        out["v1_follow"] = _timed([_v1_page(view, user, p.task_type, p.status, p.v1_cursor) for p in points], 0)
        if http_at is not None:
            host, port = http_at
            out["http_first"] = _timed([_http_page(host, port, t, s) for t, s in firsts], warm)
            out["http_follow"] = _timed(
                [_http_page(host, port, p.task_type, p.status, p.seed_cursor) for p in points], 0
            )
        result: dict[str, Any] = {k: asdict(v) for k, v in out.items()}
        result["task_counts_ms"] = _task_counts_ms()
        result["plan_v1_follow"] = _explain_v1_follow(points[0])
        return result
    finally:
        user_model.objects.filter(username=_USER).delete()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.growth_lists")
    parser.add_argument("--task-types", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--http", help="host:port of a gunicorn serving the same database")
    args = parser.parse_args()
    import django

    django.setup()
    http_at = None
    if args.http:
        host, port = args.http.rsplit(":", 1)
        http_at = (host, int(port))
    print(MARK + json.dumps(measure(args.task_types, args.samples, http_at)), flush=True)


if __name__ == "__main__":
    main()
