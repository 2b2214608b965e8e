"""Latency percentiles per task type and node, read from the history table (GET /api/v1/stats/).

A run counts when it finished in the window: its final status's history row (completed, failed or
cancelled) has `at` in [since, until). Each run's steps are tasks_app/tasks/timings.py's, the ones the
admin's task page shows, so both say the same of a run:

* queue wait: the run's start (the row that created, retried or moved the task, the first row with the
  run's run_id) -> picked up (its first `received`; `in_progress` if the node never said received);
* run time: its first `in_progress` -> its final status;
* end to end: its start -> its final status.

A step the run skipped has no value and is left out of that metric's percentiles. Tracked tasks (no node,
no runs) are not counted. The node and task type are the task's (a moved task's earlier runs count under
the node it is on now).

Percentiles are nearest-rank (PERCENTILE_METHOD): of n values sorted ascending, the p-th percentile is the
value at 1-based rank ceil(p / 100 * n). Always one of the values, never an interpolation.

The cost is bounded whatever the table holds: the window is at most MAX_WINDOW long, and at most MAX_RUNS
runs are read, the most recent to finish (`sampled` says when there were more). The final rows come
along the `at` index in one query; the rows of their runs along the (task, at, id) index, RUN_CHUNK runs
per query. The arithmetic is Python's, the same on SQLite and PostgreSQL.

The same definitions (run_timings, measures) time each run as its final status is applied, for /metrics'
histograms (tasks_app/ops/metrics.py), and TASKHUB_LATENCY_OBJECTIVES judges these rows
(tasks_app/ops/objectives.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db.models import F, Q

from tasks_app.models import TaskStatusChange
from tasks_app.ops.objectives import PERCENTILES as PERCENTILES  # latency measures these
from tasks_app.tasks.timings import RunTiming, runs_from
from workers.protocol.status import TERMINAL, Status

MAX_WINDOW = timedelta(days=7)
DEFAULT_WINDOW = timedelta(hours=1)
MAX_RUNS = 100_000
RUN_CHUNK = 1000  # runs per history query: well under SQLite's and PostgreSQL's parameter limits
PERCENTILE_METHOD = "nearest-rank"


@dataclass(frozen=True)
class Metric:
    """One step's durations over the runs that had it, in seconds (None when none had it)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Row:
    task_type: str
    node: str
    runs: int
    queue_wait: Metric
    run_time: Metric
    end_to_end: Metric


@dataclass(frozen=True)
class LatencyStats:
    since: datetime
    until: datetime
    sampled: bool  # more runs finished in the window than were read (the MAX_RUNS most recent were)
    rows: list[Row]


class _HistoryRow(NamedTuple):
    """What timings.runs_from reads of a history row; the source is not needed here."""

    run_id: str
    from_status: str
    to_status: str
    at: datetime
    source: str = ""


def measures(run: RunTiming) -> dict[str, timedelta | None]:
    """A run's three measures by name (Row's fields, and the objectives' and histograms' names)."""
    return {"queue_wait": run.queue_wait, "run_time": run.run_time, "end_to_end": run.end_to_end}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the value at 1-based rank ceil(p / 100 * n) of the values sorted ascending."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def metric(values: Sequence[float]) -> Metric:
    p50, p95, p99 = (percentile(values, p) for p in PERCENTILES)
    return Metric(count=len(values), p50=p50, p95=p95, p99=p99)


def latency_stats(
    *, since: datetime, until: datetime, task_type: str | None = None, node: str | None = None, max_runs: int = MAX_RUNS
) -> LatencyStats:
    """Percentiles of the runs that finished in [since, until), by (task_type, node), sorted by both.
    The caller checks the window (since < until, at most MAX_WINDOW): this only reads."""
    finals = TaskStatusChange.objects.filter(at__gte=since, at__lt=until, to_status__in=TERMINAL).exclude(run_id="")
    if task_type is not None:
        finals = finals.filter(task__task_type=task_type)
    if node is not None:
        finals = finals.filter(task__node=node)
    found = list(
        finals.order_by("-at", "-id").values_list("task_id", "run_id", "task__task_type", "task__node")[: max_runs + 1]
    )
    sampled = len(found) > max_runs
    # A run has one final row (a final status stays final; a retry starts a new run), but be sure.
    group_of: dict[tuple[str, str], tuple[str, str]] = {}
    for task_id, run_id, type_, node_ in found[:max_runs]:
        group_of.setdefault((task_id, run_id), (type_, node_))

    samples: dict[tuple[str, str], tuple[list[float], list[float], list[float], list[int]]] = {}
    for key, run in run_timings(list(group_of), until=until):
        if run.outcome not in TERMINAL:
            continue  # not reached: the window's final row is the run's, whose first final it is
        queue, running, total, runs = samples.setdefault(group_of[key], ([], [], [], [0]))
        runs[0] += 1
        for into, value in zip((queue, running, total), measures(run).values(), strict=True):
            if value is not None:
                into.append(value.total_seconds())
    rows = [
        Row(
            task_type=type_,
            node=node_,
            runs=runs[0],
            queue_wait=metric(queue),
            run_time=metric(running),
            end_to_end=metric(total),
        )
        for (type_, node_), (queue, running, total, runs) in sorted(samples.items())
    ]
    return LatencyStats(since=since, until=until, sampled=sampled, rows=rows)


def run_timings(
    keys: list[tuple[str, str]], *, until: datetime | None = None, chunk: int = RUN_CHUNK
) -> Iterable[tuple[tuple[str, str], RunTiming]]:
    """Each (task_id, run_id) with its timing, `chunk` runs per query. A run's rows all come before its
    final row, so none at or after `until` is read (a retried task's later runs are not). Also what
    transitions.task_transition_many times the runs it finished by, for /metrics' histograms (in one
    query: its batch's runs in one chunk), so the histograms and these percentiles measure alike."""
    for start in range(0, len(keys), chunk):
        batch = keys[start : start + chunk]
        wanted = set(batch)  # this chunk's runs only: a task's other run may be another chunk's
        rows = TaskStatusChange.objects.filter(task_id__in={task_id for task_id, _ in batch})
        # Progress rows (a repeated status with new data) time nothing: a handler reporting every second for
        # an hour would otherwise add thousands of rows to read. A move (pending -> pending) starts a run.
        rows = rows.exclude(Q(from_status=F("to_status")) & ~Q(to_status=Status.PENDING.value))
        if until is not None:
            rows = rows.filter(at__lt=until)
        by_run: dict[tuple[str, str], list[_HistoryRow]] = {}
        for task_id, run_id, from_status, to_status, at in rows.order_by("task_id", "at", "id").values_list(
            "task_id", "run_id", "from_status", "to_status", "at"
        ):
            if (task_id, run_id) in wanted:
                by_run.setdefault((task_id, run_id), []).append(_HistoryRow(run_id, from_status, to_status, at))
        for key, history in by_run.items():
            yield key, runs_from(history)[0]
