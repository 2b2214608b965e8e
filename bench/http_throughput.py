"""(a) POST /task requests/s through gunicorn, beside bare Django endpoints served the same way.

All servers run at once (idle sync workers cost nothing) and the endpoints are measured in
interleaved rounds, each round in a rotated order, so that a slow spell of the machine (2 cores,
shared) falls on all of them alike rather than on whichever ran at that moment. Each endpoint's
figure is the median of its rounds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.load import LoadResult, post_load
from bench.procs import Server

WARMUP_S = 2


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    body: dict[str, object]


POST_TASK = Endpoint(
    "post", "POST /task (taskhub.settings)", "/task", {"task_type": "bench_post", "task_data": {"k": "v"}}
)
BARE_NOOP = Endpoint(
    "noop", "bare Django: no-op JsonResponse", "/noop", {"task_type": "bench_noop", "task_data": {"k": "v"}}
)
BARE_INSERT = Endpoint(
    "insert", "bare Django: one ORM INSERT", "/insert", {"task_type": "bench_insert", "task_data": {"k": "v"}}
)
PROD_NOOP = Endpoint(
    "prod_noop",
    "no-op view under taskhub.settings (diagnostic)",
    "/bench-noop",
    {"task_type": "bench_noop", "task_data": {"k": "v"}},
)


@dataclass(frozen=True)
class Measured:
    endpoint: Endpoint
    rounds: list[LoadResult]

    @property
    def median(self) -> LoadResult:
        ordered = sorted(self.rounds, key=lambda r: r.rps)
        return ordered[len(ordered) // 2]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def spread(self) -> str:
        lo, hi = min(r.rps for r in self.rounds), max(r.rps for r in self.rounds)
        return f"{lo:,.0f} to {hi:,.0f}"


def measure_interleaved(
    targets: list[tuple[Server, Endpoint]], wrk: str | None, seconds: int, connections: int, rounds: int
) -> dict[str, Measured]:
    results: dict[str, list[LoadResult]] = {e.key: [] for _, e in targets}
    for server, endpoint in targets:  # every worker up, its connection to PostgreSQL open
        post_load(wrk, server.base_url + endpoint.path, endpoint.body, WARMUP_S, connections)
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for server, endpoint in order:
            result = post_load(wrk, server.base_url + endpoint.path, endpoint.body, seconds, connections)
            if result.errors:
                print(f"warning: {endpoint.label}: {result.errors} errors; see {server.log}", flush=True)
            results[endpoint.key].append(result)
    return {e.key: Measured(e, results[e.key]) for _, e in targets}


def rows_created(task_type: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM global_task WHERE task_type = %s", [task_type])
        row = cursor.fetchone()
    return int(row[0]) if row else 0
