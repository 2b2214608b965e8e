"""GET /metrics: counters kept in Redis across processes, gauges from the database and the stream,
the writer's histograms, and who may scrape when TASKHUB_METRICS_PUBLIC is false."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from tasks_app.fleet.scheduling import node_cordon
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Node, TaskStatusChange
from tasks_app.ops import metrics
from tasks_app.tasks.services import task_create, task_update, task_update_push
from tasks_app.tasks.transitions import Origin, StatusUpdate, task_transition, task_transition_many
from tasks_app.tasks.writer import run_once
from workers.protocol import keys
from workers.protocol.status import Verdict

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

Capture = Callable[..., AbstractContextManager[Any]]
Commit = Callable[[], AbstractContextManager[Any]]


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics", **headers)  # type: ignore[arg-type]
    assert resp.status_code == 200, resp.content
    assert resp["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(resp.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Capture) -> Callable[[], AbstractContextManager[Any]]:
    """`with commit():` runs the block's on_commit callbacks (where counters are recorded) at its
    end, as a real commit would. The test's own transaction is never committed otherwise."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_created_counts_new_tasks_once_per_type(client: Client, redis_stream: redis.Redis, commit: Commit) -> None:
    with commit():
        task_create(task_type="vdag_report", task_id="t-1")
        task_create(task_type="vdag_report", task_id="t-1")  # a safe retry: not a new task
        task_create(task_type="vdag_report")
        task_create(task_type="block_audit")
    s = scrape(client)
    assert value(s, "taskhub_tasks_created_total", task_type="vdag_report") == 2
    assert value(s, "taskhub_tasks_created_total", task_type="block_audit") == 1


def test_a_rolled_back_create_is_not_counted(
    client: Client, redis_stream: redis.Redis, django_capture_on_commit_callbacks: Capture
) -> None:
    def create_then_fail() -> None:
        with transaction.atomic():
            task_create(task_type="rolled_back")
            raise RuntimeError("abort")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        create_then_fail()
    assert value(scrape(client), "taskhub_tasks_created_total", task_type="rolled_back") is None


def test_finished_counts_applied_final_changes_from_every_writer(
    client: Client, redis_stream: redis.Redis, commit: Commit
) -> None:
    with commit():
        a, _ = task_create(task_type="vdag_report")
        b, _ = task_create(task_type="vdag_report")
        c, _ = task_create(task_type="block_audit")
        d, _ = task_create(task_type="block_audit")
        task_transition(update=StatusUpdate(a.task_id, "in_progress"))  # not final: not counted
        task_transition(update=StatusUpdate(a.task_id, "completed"))
        task_transition(update=StatusUpdate(a.task_id, "completed"))  # a duplicate changes nothing
        task_transition(update=StatusUpdate(a.task_id, "failed"))  # refused: a final status stays
        task_update(task_id=b.task_id, changes={"task_status": "failed"})  # PUT and the admin take this path
        task_transition(update=StatusUpdate(c.task_id, "cancelled"))
        # The update stream, applied by the writer.
        task_update_push(task_id=d.task_id, status="received")
        task_update_push(task_id=d.task_id, status="completed", task_status_data={"ok": True})
        assert run_once() == 2
    s = scrape(client)
    assert value(s, "taskhub_tasks_finished_total", task_type="vdag_report", status="completed") == 1
    assert value(s, "taskhub_tasks_finished_total", task_type="vdag_report", status="failed") == 1
    assert value(s, "taskhub_tasks_finished_total", task_type="block_audit", status="cancelled") == 1
    assert value(s, "taskhub_tasks_finished_total", task_type="block_audit", status="completed") == 1
    total = sum(v for (name, _), v in s.items() if name == "taskhub_tasks_finished_total")
    assert total == 4


def test_writer_batches_feed_the_histograms(client: Client, redis_stream: redis.Redis, commit: Commit) -> None:
    with commit():
        tasks = [task_create(task_type="t")[0] for _ in range(7)]
        for t in tasks:
            task_update_push(task_id=t.task_id, status="received")
        while run_once(batch_size=100):
            pass
    s = scrape(client)
    batches = value(s, "taskhub_writer_batch_size_count")
    assert batches is not None and batches >= 1  # the updates may span several shards
    assert value(s, "taskhub_writer_batch_size_sum") == 7
    assert value(s, "taskhub_writer_batch_size_bucket", le="+Inf") == batches
    assert value(s, "taskhub_writer_batch_seconds_count") == batches
    seconds = value(s, "taskhub_writer_batch_seconds_sum")
    assert seconds is not None and 0 < seconds < 30
    # Buckets are cumulative and end at the count.
    buckets = {float(dict(labels)["le"]): v for (n, labels), v in s.items() if n == "taskhub_writer_batch_size_bucket"}
    counts = [v for _, v in sorted(buckets.items())]
    assert counts == sorted(counts) and counts[-1] == batches


def test_backlog_and_lag_of_the_update_stream(client: Client, redis_stream: redis.Redis) -> None:
    s = scrape(client)
    assert value(s, "taskhub_update_stream_backlog") == 0
    assert value(s, "taskhub_update_stream_lag_seconds") == 0
    # An entry sent ten seconds ago that no writer has applied yet.
    old_ms = int(time.time() * 1000) - 10_000
    redis_stream.xadd(keys.stream_key(0), {"task_id": "x", "status": "received"}, id=f"{old_ms}-0")
    redis_stream.xadd(keys.stream_key(1), {"task_id": "y", "status": "received"})
    s = scrape(client)
    assert value(s, "taskhub_update_stream_backlog") == 2
    lag = value(s, "taskhub_update_stream_lag_seconds")
    assert lag is not None and 9.5 <= lag < 60
    # Once applied (the offsets move), the lag is gone even before the trim.
    run_once()
    s = scrape(client)
    assert value(s, "taskhub_update_stream_lag_seconds") == 0
    assert value(s, "taskhub_update_stream_backlog") == 0


def test_tasks_and_nodes_online_gauges(client: Client, redis_stream: redis.Redis) -> None:
    demo = cluster_ensure(name="demo")
    other = cluster_ensure(name="quiet")
    for name in ("n1", "n2", "n3"):
        node_register(cluster=demo, name=name)
    node_register(cluster=other, name="q1")
    Node.objects.filter(name__in=["n1", "n2"]).update(last_heartbeat=datetime.now(UTC))
    Node.objects.filter(name="n3").update(last_heartbeat=datetime.now(UTC) - timedelta(hours=1))
    task_create(task_type="t")
    task_create(task_type="t", task_status="failed")
    task_create(task_type="u", task_status="failed")
    s = scrape(client)
    assert value(s, "taskhub_nodes_online", cluster="demo") == 2
    assert value(s, "taskhub_nodes_online", cluster="quiet") == 0
    assert value(s, "taskhub_tasks", status="pending") == 1
    assert value(s, "taskhub_tasks", status="failed") == 2
    assert value(s, "taskhub_tasks", status="completed") == 0  # every status is present
    assert value(s, "taskhub_metrics_source_up", source="redis") == 1
    assert value(s, "taskhub_metrics_source_up", source="database") == 1


def test_placement_gauges_show_scheduling_capacity_and_reservations(client: Client, redis_stream: redis.Redis) -> None:
    demo = cluster_ensure(name="demo")
    for name in ("n1", "n2", "n3"):
        node_register(cluster=demo, name=name, capacity={"slots": 4}, capacity_blocks=100)
    Node.objects.filter(name__in=["n1", "n2", "n3"]).update(last_heartbeat=datetime.now(UTC))
    node_cordon(node=Node.objects.get(name="n3"))
    units = [{"node": n} for n in ("n1", "n2", "n3")]
    created, _ = task_create(
        task_type="volume_create",
        execute=True,
        node="n2",
        task_data={"cluster": "demo", "name": "v1", "storage_units": units},
        constraints={"capacity": {"slots": 3}},
    )
    assert created.node == "n2" and created.task_status == "pending"
    s = scrape(client)
    assert value(s, "taskhub_nodes", cluster="demo", scheduling="schedulable") == 2
    assert value(s, "taskhub_nodes", cluster="demo", scheduling="cordoned") == 1
    assert value(s, "taskhub_node_capacity", node="n2", resource="slots") == 4
    assert value(s, "taskhub_node_capacity", node="n2", resource="blocks") == 100  # as its worker reports
    assert value(s, "taskhub_node_reserved", node="n2", resource="slots") == 3
    assert value(s, "taskhub_node_reserved", node="n1", resource="slots") == 0


def test_redis_down_fails_neither_a_create_nor_the_scrape(
    client: Client, settings: Any, django_capture_on_commit_callbacks: Capture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    with django_capture_on_commit_callbacks(execute=True):
        task, created = task_create(task_type="t")
        task_transition(update=StatusUpdate(task.task_id, "completed"))
    assert created
    metrics.observe_writer_batch(entries=3, seconds=0.1)  # swallowed too
    s = scrape(client)
    assert value(s, "taskhub_metrics_source_up", source="redis") == 0
    assert value(s, "taskhub_tasks", status="completed") == 1  # the database part still answers
    assert value(s, "taskhub_update_stream_backlog") is None


def test_counter_field_names_survive_odd_task_types(client: Client, redis_stream: redis.Redis, commit: Commit) -> None:
    odd = 'a:b|c "d"'
    with commit():
        task_create(task_type=odd)
    assert value(scrape(client), "taskhub_tasks_created_total", task_type=odd) == 1
    # Foreign fields in the hash are ignored, not fatal.
    redis_stream.hset(metrics.key(), "not-json", "1")
    scrape(client)


# --- run latency histograms ------------------------------------------------------------------------

LATENCY = {
    "queue_wait": "taskhub_task_queue_wait_seconds",
    "run_time": "taskhub_task_run_seconds",
    "end_to_end": "taskhub_task_end_to_end_seconds",
}
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def buckets(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """A histogram series' cumulative buckets, by their `le` label."""
    want = set(labels.items())
    return {
        dict(lbl)["le"]: v
        for (n, lbl), v in samples.items()
        if n == f"{name}_bucket" and want == {(k, x) for k, x in lbl if k != "le"}
    }


def cumulative(values: list[float]) -> dict[str, float]:
    """What the buckets must say for these observations: how many are at most each bound."""
    out = {str(float(b)): float(sum(1 for v in values if v <= b)) for b in BOUNDS}
    out["+Inf"] = float(len(values))
    return out


@pytest.fixture
def timed_runs(redis_stream: redis.Redis, commit: Commit) -> float:
    """Runs finished by node reports with their own times, all in one batch: noop on ma (three runs),
    test_sleep on mb (one), and a tracked task (no run). Returns T, the runs' start (epoch seconds)."""
    import tests.handlers_for_tests  # noqa: F401  (registers test_sleep)

    cluster = cluster_ensure(name="lat")
    for name in ("ma", "mb"):
        node_register(cluster=cluster, name=name)
    start = float(int(time.time()) - 5000)
    with commit():
        a, b, c = (task_create(task_type="noop", task_data={"node": "ma"}, execute=True)[0] for _ in range(3))
        d = task_create(task_type="test_sleep", task_data={"node": "mb"}, execute=True)[0]
        tracked = task_create(task_type="noop_record")[0]
        TaskStatusChange.objects.update(at=datetime.fromtimestamp(start, UTC))  # every run starts at T

        def report(task: Any, status: str, after: float) -> StatusUpdate:
            return StatusUpdate(task.task_id, status, source="node:test", run_id=task.run_id, origin=Origin.NODE,
                                at=start + after)  # fmt: skip

        updates = [
            report(a, "received", 0.02), report(a, "in_progress", 1), report(a, "completed", 4),
            report(b, "received", 7), report(b, "in_progress", 8),
            report(b, "failed", 68),  # 60 s: on the bound of the 60 s bucket, so in it
            StatusUpdate(c.task_id, "failed"),  # a client's, before any node had it: now, no queue wait, no run
            report(d, "received", 0.05), report(d, "in_progress", 0.1), report(d, "completed", 4000),
            StatusUpdate(tracked.task_id, "completed"),
        ]  # fmt: skip
        with CaptureQueriesContext(connection) as queries:
            outcomes = task_transition_many(updates=updates)
        assert all(o.verdict is Verdict.APPLY for o in outcomes), outcomes
    # One query read the finished runs' rows, whatever the batch held.
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "global_task_history".')]
    assert len(reads) == 1, reads
    return start


def test_finished_runs_feed_the_latency_histograms(client: Client, timed_runs: float) -> None:
    s = scrape(client)
    ma = {"task_type": "noop", "node": "ma"}
    assert buckets(s, LATENCY["queue_wait"], **ma) == cumulative([0.02, 7])
    assert buckets(s, LATENCY["queue_wait"], **ma)["0.05"] == 1
    assert buckets(s, LATENCY["run_time"], **ma) == cumulative([3, 60])
    assert buckets(s, LATENCY["run_time"], **ma)["60.0"] == 2 and buckets(s, LATENCY["run_time"], **ma)["30.0"] == 1
    # c ended when the batch ran, about 5000 s after T: past the last bound.
    assert buckets(s, LATENCY["end_to_end"], **ma) == cumulative([4, 68, 5000])
    assert value(s, f"{LATENCY['queue_wait']}_count", **ma) == 2
    assert value(s, f"{LATENCY['queue_wait']}_sum", **ma) == pytest.approx(7.02)
    assert value(s, f"{LATENCY['run_time']}_sum", **ma) == 63
    assert value(s, f"{LATENCY['end_to_end']}_count", **ma) == 3
    mb = {"task_type": "test_sleep", "node": "mb"}
    assert buckets(s, LATENCY["queue_wait"], **mb) == cumulative([0.05])
    assert buckets(s, LATENCY["run_time"], **mb) == cumulative([3999.9])
    assert buckets(s, LATENCY["run_time"], **mb)["3600.0"] == 0
    assert value(s, f"{LATENCY['end_to_end']}_sum", **mb) == 4000
    # Those two series and no other: the tracked task has no run to time.
    series = {dict(lbl)["task_type"] for (n, lbl) in s if n.startswith("taskhub_task_") and "le" in dict(lbl)}
    assert series == {"noop", "test_sleep"}


def test_the_histograms_count_what_the_stats_report(client: Client, timed_runs: float, api_client: Client) -> None:
    """Same runs, same definitions: /metrics' counts per measure are /api/v1/stats/' counts."""
    s = scrape(client)
    since = datetime.fromtimestamp(timed_runs, UTC).isoformat().replace("+00:00", "Z")
    rows = api_client.get("/api/v1/stats/", {"since": since}).json()["rows"]
    assert [(r["task_type"], r["node"]) for r in rows] == [("noop", "ma"), ("test_sleep", "mb")]
    for row in rows:
        for measure, name in LATENCY.items():
            count = value(s, f"{name}_count", task_type=row["task_type"], node=row["node"])
            assert (count or 0) == row[measure]["count"], (row, measure)


def test_a_rolled_back_finish_is_not_timed(client: Client, redis_stream: redis.Redis, commit: Commit) -> None:
    node_register(cluster=cluster_ensure(name="lat"), name="ma")
    task = task_create(task_type="noop", task_data={"node": "ma"}, execute=True)[0]

    def finish_then_fail() -> None:
        with transaction.atomic():
            task_transition(update=StatusUpdate(task.task_id, "completed", run_id=task.run_id, origin=Origin.NODE))
            raise RuntimeError("abort")

    with commit(), pytest.raises(RuntimeError):
        finish_then_fail()
    assert value(scrape(client), f"{LATENCY['end_to_end']}_count", task_type="noop", node="ma") is None
    with commit():
        task_transition(update=StatusUpdate(task.task_id, "completed", run_id=task.run_id, origin=Origin.NODE))
    assert value(scrape(client), f"{LATENCY['end_to_end']}_count", task_type="noop", node="ma") == 1


# --- access ------------------------------------------------------------------------------------


@pytest.fixture
def private(settings: Any, redis_stream: redis.Redis) -> None:
    settings.TASKHUB_METRICS_PUBLIC = False


def test_public_by_default(client: Client, redis_stream: redis.Redis, commit: Commit) -> None:
    with commit():
        task_create(task_type="t")
    s = scrape(client)  # anonymous: 200 and Prometheus text, checked there
    assert value(s, "taskhub_tasks", status="pending") == 1
    assert value(s, "taskhub_tasks_created_total", task_type="t") == 1
    assert value(s, "taskhub_metrics_source_up", source="redis") == 1
    assert value(s, "taskhub_metrics_source_up", source="database") == 1


def test_private_metrics_need_staff_or_a_token(client: Client, private: None) -> None:
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Token")
    bot = User.objects.create_user("prometheus", password="pw-for-tests-only")  # not staff
    token = Token.objects.create(user=bot)
    scrape(client, HTTP_AUTHORIZATION=f"Token {token.key}")
    scrape(client, HTTP_AUTHORIZATION=f"Bearer {token.key}")  # Prometheus' default scheme
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token not-a-real-token").status_code == 401
    # Sessions: staff only.
    User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True)
    client.force_login(bot)
    assert client.get("/metrics").status_code == 403
    client.force_login(User.objects.get(username="ops"))
    scrape(client)


def test_metrics_answer_get_only(client: Client, redis_stream: redis.Redis) -> None:
    assert client.post("/metrics").status_code == 405


def test_a_node_token_cannot_read_private_metrics(client: Client, private: None) -> None:
    from tasks_app.ops.accounts import node_account_ensure, token_issue

    node = node_register(cluster=cluster_ensure(name="demo"), name="node1")
    key = token_issue(user=node_account_ensure(node=node))
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {key}").status_code == 403
