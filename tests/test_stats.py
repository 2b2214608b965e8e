"""GET /api/v1/stats/ (tasks_app/ops/latency.py): its percentiles against a direct computation over the
history rows, done here independently, with every history row's time set by the test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.test import Client

import tests.handlers_for_tests  # noqa: F401  (registers test_sleep, a second executable type)
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import GlobalTask, TaskStatusChange
from tasks_app.ops.latency import latency_stats
from tasks_app.ops.objectives import parse
from tasks_app.tasks.services import task_create, task_retry
from tests.helpers import node_report

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(hours=1)
WINDOW = {"since": "2026-03-01T12:00:00Z", "until": "2026-03-01T13:00:00Z"}
FINAL = {"completed", "failed", "cancelled"}


def run_task(task_type: str, node: str, steps: list[tuple[str, float]], *, start: float) -> GlobalTask:
    """An executed task on `node`, created at T0 + start seconds, then each (status, seconds after
    start) reported by its node; every history row's `at` is set to exactly that time."""
    task, _ = task_create(task_type=task_type, task_data={"node": node}, execute=True)
    times = [start]
    for status, after in steps:
        node_report(task.task_id, status, {"error": {"message": "x"}} if status == "failed" else None)
        times.append(start + after)
    _retime(task, times)
    return task


def _retime(task: GlobalTask, times: list[float]) -> None:
    """Set the task's history rows (oldest first) to T0 + these seconds; older rows keep theirs."""
    rows = list(TaskStatusChange.objects.filter(task=task).order_by("at", "id"))
    assert len(rows) >= len(times)
    for row, seconds in zip(rows[len(rows) - len(times) :], times, strict=True):
        TaskStatusChange.objects.filter(pk=row.pk).update(at=T0 + timedelta(seconds=seconds))


@pytest.fixture
def history(redis_stream: redis.Redis) -> Iterator[None]:
    """noop and test_sleep runs on two nodes: finished, retried, running, and finished before the window."""
    cluster = cluster_ensure(name="stats")
    for name in ("sa", "sb"):
        node_register(cluster=cluster, name=name)
    done = [("received", 2), ("in_progress", 5)]
    for i, (wait, run) in enumerate([(2, 10), (1, 3), (4, 7), (3, 20), (2, 1.5)]):
        run_task("noop", "sa", [("received", wait), ("in_progress", wait + 1), ("completed", wait + 1 + run)],
                 start=60 * i)  # fmt: skip
    # No `received`: picked up when in_progress.
    run_task("noop", "sa", [("in_progress", 6), ("completed", 9)], start=400)
    # Cancelled before it ran: a queue wait, no run time.
    run_task("noop", "sa", [("received", 1), ("cancelled", 30)], start=500)
    # Two runs: the first failed, the retry completed.
    retried = run_task("noop", "sa", [*done, ("failed", 50)], start=600)
    task_retry(task_id=retried.task_id, source="test")
    node_report(retried.task_id, "received")
    node_report(retried.task_id, "in_progress")
    node_report(retried.task_id, "completed")
    _retime(retried, [700, 704, 705, 712])
    # Still running, and finished before the window (its final row is older): neither counts.
    run_task("noop", "sa", [*done], start=800)
    run_task("noop", "sa", [*done, ("completed", 30)], start=-3600)
    # Finished after the window: not counted either.
    run_task("noop", "sa", [*done, ("completed", 30)], start=3590)
    for i, run in enumerate([4, 8, 15]):
        run_task("noop", "sb", [("received", 1 + i), ("in_progress", 2 + i), ("completed", 2 + i + run)], start=900)
    run_task("test_sleep", "sb", [*done, ("failed", 45)], start=1000)
    yield


# --- the direct computation ---------------------------------------------------------------------------


def nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[-(-p * len(ordered) // 100) - 1]


def direct(*, task_type: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
    """Straight from the rows: a run is a task's rows with one run_id; it counts when its final row is in
    the window."""
    runs: dict[tuple[str, str], list[TaskStatusChange]] = {}
    for row in TaskStatusChange.objects.select_related("task").order_by("at", "id"):
        runs.setdefault((row.task_id, row.run_id), []).append(row)
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for rows in runs.values():
        task = rows[0].task
        final = [r.at for r in rows if r.to_status in FINAL]
        if not final or not SINCE <= final[0] < UNTIL:
            continue
        if (task_type is not None and task.task_type != task_type) or (node is not None and task.node != node):
            continue
        start, end = rows[0].at, final[0]
        picked = [r.at for r in rows if r.to_status in ("received", "in_progress")]
        began = [r.at for r in rows if r.to_status == "in_progress"]
        group = groups.setdefault((task.task_type, task.node), {"runs": [], "q": [], "r": [], "e": []})
        group["runs"].append(1)
        group["e"].append((end - start).total_seconds())
        if picked:
            group["q"].append((picked[0] - start).total_seconds())
        if began:
            group["r"].append((end - began[0]).total_seconds())

    def metric(values: list[float]) -> dict[str, Any]:
        return {"count": len(values), **{f"p{p}": nearest_rank(values, p) for p in (50, 95, 99)}}

    return [
        {"task_type": key[0], "node": key[1], "runs": len(g["runs"]), "queue_wait": metric(g["q"]),
         "run_time": metric(g["r"]), "end_to_end": metric(g["e"]), "objective": None}
        for key, g in sorted(groups.items())
    ]  # fmt: skip


def stats(client: Client, **params: str) -> dict[str, Any]:
    response = client.get("/api/v1/stats/", {**WINDOW, **params})
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    assert (body["since"], body["until"]) == ("2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z")
    assert (body["sampled"], body["percentile_method"]) == (False, "nearest-rank")
    return body


# --- tests ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("history")
def test_percentiles_match_the_history_rows(api_client: Client) -> None:
    rows = stats(api_client)["rows"]
    assert rows == direct()
    assert [(r["task_type"], r["node"], r["runs"]) for r in rows] == [
        ("noop", "sa", 9), ("noop", "sb", 3), ("test_sleep", "sb", 1)
    ]  # fmt: skip
    sa = rows[0]
    # 5 completed + 1 without received + 1 cancelled + 2 runs of the retried task; the running one is left out.
    assert sa["queue_wait"] == {"count": 9, "p50": 2.0, "p95": 6.0, "p99": 6.0}
    # Run times 10, 3, 7, 20, 1.5, 3, 45 (the failed run), 7 (its retry); the cancelled run never ran.
    assert sa["run_time"] == {"count": 8, "p50": 7.0, "p95": 45.0, "p99": 45.0}
    assert sa["end_to_end"]["count"] == 9 and sa["end_to_end"]["p50"] == 12.0


@pytest.mark.usefixtures("history")
def test_filters_by_task_type_and_node(api_client: Client) -> None:
    assert stats(api_client, task_type="noop")["rows"] == direct(task_type="noop")
    assert stats(api_client, node="sb")["rows"] == direct(node="sb")
    assert len(direct(node="sb")) == 2
    only = stats(api_client, task_type="test_sleep", node="sb")["rows"]
    assert only == direct(task_type="test_sleep", node="sb")
    assert only[0]["runs"] == 1 and only[0]["run_time"] == {"count": 1, "p50": 40.0, "p95": 40.0, "p99": 40.0}
    assert stats(api_client, node="nowhere")["rows"] == []


@pytest.mark.usefixtures("history")
def test_a_step_no_run_had_is_null_and_sampling_is_said() -> None:
    cancelled = latency_stats(since=T0 + timedelta(seconds=520), until=T0 + timedelta(seconds=540))
    assert [(r.runs, r.queue_wait.p50, r.run_time.count, r.run_time.p99) for r in cancelled.rows] == [(1, 1.0, 0, None)]
    capped = latency_stats(since=SINCE, until=UNTIL, node="sb", max_runs=2)
    assert capped.sampled and sum(r.runs for r in capped.rows) == 2
    # The two most recent to finish: the test_sleep run (at 1045 s) and the 15 s one (at 919 s).
    assert [(r.task_type, r.runs) for r in capped.rows] == [("noop", 1), ("test_sleep", 1)]
    assert capped.rows[0].run_time.p50 == 15.0


@pytest.mark.usefixtures("history")
def test_each_row_is_judged_against_its_type_s_objective(api_client: Client, settings: Any) -> None:
    settings.TASKHUB_LATENCY_OBJECTIVES = parse("noop=end_to_end:p50:11.5,test_sleep=run_time:p99:40")
    rows = stats(api_client)["rows"]
    judged = [(r["task_type"], r["node"], r["objective"]) for r in rows]
    assert judged == [
        # p50 of end to end on sa is 12 s (test_percentiles_match_the_history_rows); on sb, of 6, 11 and 19 s, 11.
        ("noop", "sa", {"measure": "end_to_end", "percentile": 50, "seconds": 11.5, "value": 12.0, "met": False}),
        ("noop", "sb", {"measure": "end_to_end", "percentile": 50, "seconds": 11.5, "value": 11.0, "met": True}),
        # At most: 40 s is met.
        ("test_sleep", "sb", {"measure": "run_time", "percentile": 99, "seconds": 40.0, "value": 40.0, "met": True}),
    ]
    assert [r["objective"]["value"] for r in rows] == [r["end_to_end"]["p50"] for r in rows[:2]] + [40.0]
    # No objective for a type: null. No run had the step: nothing to judge, so met is null too.
    settings.TASKHUB_LATENCY_OBJECTIVES = parse("noop=run_time:p50:1")
    assert stats(api_client, task_type="test_sleep")["rows"][0]["objective"] is None
    cancelled = api_client.get("/api/v1/stats/", {"since": "2026-03-01T12:08:40Z", "until": "2026-03-01T12:09:00Z"})
    [row] = cancelled.json()["rows"]
    assert row["objective"] == {"measure": "run_time", "percentile": 50, "seconds": 1.0, "value": None, "met": None}


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-03-01T12:00:00"}, "until"),  # no offset
        ({"since": "2026-02-30T12:00:00Z"}, "since"),
        ({"since": "2026-03-01T13:00:00Z", "until": "2026-03-01T12:00:00Z"}, "since"),
        ({"since": "2026-03-01T12:00:00Z", "until": "2026-03-08T12:00:01Z"}, "since"),
        ({"until": "0001-01-01T00:30:00Z"}, "until"),
        ({"nodes": "sa"}, "nodes"),
    ],
)
def test_bad_parameters_are_400s_naming_them(api_client: Client, params: dict[str, str], name: str) -> None:
    response = api_client.get("/api/v1/stats/", params)
    assert response.status_code == 400, response.content
    assert list(response.json()) == [name]


def test_default_window_is_the_last_hour_and_seven_days_is_allowed(api_client: Client) -> None:
    body = api_client.get("/api/v1/stats/").json()
    since, until = (datetime.fromisoformat(body[k]) for k in ("since", "until"))
    assert until - since == timedelta(hours=1) and abs(until - datetime.now(UTC)) < timedelta(minutes=1)
    week = api_client.get(
        "/api/v1/stats/", {"since": "2026-03-01T12:00:00+02:00", "until": "2026-03-08T12:00:00+02:00"}
    )
    assert week.status_code == 200 and week.json()["since"] == "2026-03-01T10:00:00Z"


def test_only_accounts_that_read_the_api_may(client: Client) -> None:
    assert client.get("/api/v1/stats/").status_code == 401
