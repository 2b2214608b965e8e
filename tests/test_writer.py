"""The asynchronous update path: the stream, the writer's batches, and what survives a SIGKILL."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import transaction
from django.db.models import Sum

from tasks_app.models import GlobalTask, StreamOffset, TaskStatusChange
from tasks_app.tasks import dead_letters, transitions, writer
from tasks_app.tasks import stream as update_stream
from tasks_app.tasks.services import task_create, task_update_push
from tasks_app.tasks.transitions import StatusUpdate
from tasks_app.tasks.writer import run_forever, run_once
from tests.helpers import start_manage, stop, wait_until
from workers.protocol import keys

pytestmark = pytest.mark.redis

LIFE = ["received", "in_progress", "completed"]


def statuses(task_id: str) -> list[str]:
    rows = TaskStatusChange.objects.filter(task_id=task_id).order_by("at", "id")
    return list(rows.values_list("to_status", flat=True))


@pytest.mark.django_db
def test_updates_for_a_task_apply_in_send_order_across_batches(redis_stream: redis.Redis) -> None:
    task, _ = task_create(task_type="t")
    for status in LIFE:
        task_update_push(task_id=task.task_id, status=status, task_status_data={"at": status})
    while run_once(batch_size=1):
        pass
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert task.task_status_data == {"at": "completed"}
    assert statuses(task.task_id) == ["pending", *LIFE]


@pytest.mark.django_db
def test_absent_status_data_keeps_the_stored_value(redis_stream: redis.Redis) -> None:
    task, _ = task_create(task_type="t", task_status_data={"keep": True})
    task_update_push(task_id=task.task_id, status="received")
    run_once()
    task.refresh_from_db()
    assert task.task_status_data == {"keep": True}


@pytest.mark.django_db
def test_committed_entries_leave_redis_and_the_offset_moves(redis_stream: redis.Redis) -> None:
    tasks = [task_create(task_type="t")[0] for _ in range(20)]
    for t in tasks:
        task_update_push(task_id=t.task_id, status="completed")
    assert update_stream.backlog() == 20
    assert run_once() == 20
    assert update_stream.backlog() == 0
    assert StreamOffset.objects.aggregate(n=Sum("applied"))["n"] == 20
    assert run_once() == 0


@pytest.mark.django_db
def test_poison_entries_and_deleted_tasks_do_not_stop_the_writer(redis_stream: redis.Redis) -> None:
    task, _ = task_create(task_type="t")
    gone, _ = task_create(task_type="t")
    shard = keys.shard_for(task.task_id)
    redis_stream.xadd(keys.stream_key(shard), {"garbage": "1"})
    task_update_push(task_id=gone.task_id, status="completed")
    GlobalTask.objects.filter(pk=gone.pk).delete()
    task_update_push(task_id=task.task_id, status="completed")
    while run_once():
        pass
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert update_stream.backlog() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("at", ["1e13", "-1e13", "1e300"])
def test_a_report_with_a_time_no_datetime_holds_is_dead_lettered_not_fatal(redis_stream: redis.Redis, at: str) -> None:
    # Finite, but past what a datetime holds: the writer failed on it (ValueError: year is out of range),
    # outside its dead-letter path, and every restart failed on the same entry.
    poisoned, _ = task_create(task_type="t")
    fine, _ = task_create(task_id=f"{poisoned.task_id}-b", task_type="t")
    shard = keys.shard_for(poisoned.task_id)
    fields: dict[Any, Any] = {
        "task_id": poisoned.task_id, "status": "completed", "source": "node:n1", "origin": "node", "at": at,
    }  # fmt: skip
    redis_stream.xadd(keys.stream_key(shard), fields)
    task_update_push(task_id=fine.task_id, status="completed")
    while run_once():
        pass
    assert GlobalTask.objects.get(pk=fine.pk).task_status == "completed"
    assert GlobalTask.objects.get(pk=poisoned.pk).task_status == "pending"
    assert update_stream.backlog() == 0
    assert dead_letters.count() == 1


@pytest.mark.django_db
def test_an_entry_our_code_fails_on_is_dead_lettered_and_the_rest_applied(
    redis_stream: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug of ours that one entry meets (not the database refusing it, nor an outage) stopped the writer.
    tasks = [task_create(task_id=f"bug-{i}", task_type="t")[0] for i in range(3)]
    real = transitions.task_transition_many

    def failing_on_bug_1(*, updates: list[StatusUpdate]) -> Any:
        if any(u.task_id == "bug-1" for u in updates):
            raise ValueError("a bug met by bug-1's update")
        return real(updates=updates)

    monkeypatch.setattr(writer, "task_transition_many", failing_on_bug_1)
    for task in tasks:
        task_update_push(task_id=task.task_id, status="completed")
    while run_once():
        pass
    statuses = dict(GlobalTask.objects.values_list("task_id", "task_status"))
    assert statuses == {"bug-0": "completed", "bug-1": "pending", "bug-2": "completed"}
    assert dead_letters.count() == 1
    assert update_stream.backlog() == 0


def _seed_tasks(n: int) -> list[str]:
    ids = [f"kill-{i:05d}" for i in range(n)]
    GlobalTask.objects.bulk_create([GlobalTask(task_id=i, task_type="soak") for i in ids])
    TaskStatusChange.objects.bulk_create(
        [TaskStatusChange(task_id=i, from_status="", to_status="pending", at="2026-01-01T00:00:00Z") for i in ids]
    )
    return ids


def _push_lives(ids: list[str]) -> None:
    for status in LIFE:
        for n, task_id in enumerate(ids):
            data = {"result": n} if status == "completed" else None
            update_stream.push(StatusUpdate(task_id=task_id, status=status, status_data=data, source="test"))


def _applied() -> int:
    return int(StreamOffset.objects.aggregate(n=Sum("applied"))["n"] or 0)


def _assert_every_life_complete(ids: list[str]) -> None:
    assert GlobalTask.objects.filter(task_type="soak").exclude(task_status="completed").count() == 0
    for n, task_id in enumerate(ids):
        assert statuses(task_id) == ["pending", *LIFE], task_id
        assert GlobalTask.objects.get(pk=task_id).task_status_data == {"result": n}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_writer_killed_mid_stream_loses_no_update(child_env: dict[str, str], tmp_path: Path) -> None:
    ids = _seed_tasks(1500)
    _push_lives(ids)
    total = len(ids) * len(LIFE)
    first = start_manage(["run_writer", "--batch-size", "40"], child_env, tmp_path / "writer1.log")
    try:
        wait_until(lambda: _applied() >= 400, 60, "the first writer to apply some batches", interval=0.02)
        stop(first, signal.SIGKILL)
    finally:
        stop(first, signal.SIGKILL)
    applied_before = _applied()
    assert 0 < applied_before < total, "the kill should land in the middle of the stream"
    # Entries committed but not yet trimmed when the kill landed may still sit in Redis.
    assert update_stream.backlog() >= total - applied_before

    second = start_manage(["run_writer", "--batch-size", "200"], child_env, tmp_path / "writer2.log")
    try:
        wait_until(lambda: _applied() == total, 90, "the restarted writer to drain the stream")
    finally:
        stop(second)
    assert second.returncode == 0, (tmp_path / "writer2.log").read_text()
    assert update_stream.backlog() == 0
    _assert_every_life_complete(ids)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_writers_keep_each_tasks_updates_in_order(child_env: dict[str, str], tmp_path: Path) -> None:
    ids = _seed_tasks(400)
    writers = [
        start_manage(["run_writer", "--batch-size", "25"], child_env, tmp_path / f"writer{i}.log") for i in range(2)
    ]
    try:
        # Both at work before the updates come: one alone can drain them before the other has started, and
        # a writer stopped while it starts up (before its signal handler) exits as killed.
        wait_until(
            lambda: all("writer started" in (tmp_path / f"writer{i}.log").read_text() for i in range(2)),
            60,
            "both writers to start",
        )
        _push_lives(ids)
        wait_until(lambda: _applied() == len(ids) * len(LIFE), 90, "two writers to drain the stream")
    finally:
        for w in writers:
            stop(w)
    logs: Any = [(tmp_path / f"writer{i}.log").read_text() for i in range(2)]
    assert all(w.returncode == 0 for w in writers), logs
    _assert_every_life_complete(ids)


@pytest.mark.django_db
def test_entries_the_database_refuses_are_skipped_not_fatal(redis_stream: redis.Redis) -> None:
    task, _ = task_create(task_type="t")
    other, _ = task_create(task_type="t")
    key = keys.stream_key(keys.shard_for(task.task_id))
    redis_stream.xadd(key, {"task_id": task.task_id, "status": "bogus"})
    redis_stream.xadd(key, {"task_id": task.task_id, "status": "completed", "data": "[1]"})
    # Written by something other than our API, which refuses NUL: PostgreSQL refuses it in jsonb.
    redis_stream.xadd(key, {"task_id": task.task_id, "status": "in_progress", "data": '{"x": "a\\u0000b"}'})
    task_update_push(task_id=task.task_id, status="completed", task_status_data={"ok": 1})
    task_update_push(task_id=other.task_id, status="completed")
    while run_once():
        pass
    task.refresh_from_db()
    other.refresh_from_db()
    assert task.task_status == "completed" and task.task_status_data == {"ok": 1}
    assert other.task_status == "completed"
    assert update_stream.backlog() == 0


@pytest.mark.django_db
def test_a_folded_report_writes_each_step_with_its_own_time(redis_stream: redis.Redis) -> None:
    """One entry for a run's received, in_progress and outcome (workers/node/sender.py: fold): the writer
    applies each step, and the history dates each when it happened on the node, never before the task's
    last change or after the writer applied it."""
    import time
    from datetime import UTC, datetime

    from tasks_app.fleet.services import cluster_ensure, node_register
    from workers.node.sender import fold
    from workers.protocol.messages import Origin
    from workers.protocol.stream import push_updates

    node_register(cluster=cluster_ensure(name="demo"), name="node1")
    task, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    t0 = time.time()
    reports = [
        StatusUpdate(
            task_id=task.task_id, status=status, status_data={"step": status}, source="node:node1",
            run_id=task.run_id, origin=Origin.NODE, at=t0 + i * 0.25,
        )
        for i, status in enumerate(("received", "in_progress", "in_progress", "completed"))
    ]  # fmt: skip
    folded = fold(reports)
    # The run started at its first in_progress, not at the repeat (a progress report) after it.
    assert len(folded) == 1 and folded[0].steps == (("received", t0), ("in_progress", t0 + 0.25))
    other, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    skewed = StatusUpdate(  # from a node whose clock is an hour slow
        task_id=other.task_id,
        status="received",
        source="node:node1",
        run_id=other.run_id,
        origin=Origin.NODE,
        at=t0 - 3600,
    )
    push_updates([*folded, skewed])
    time.sleep(1.0)  # applied after the last step's time
    assert run_once() == 2
    task.refresh_from_db()
    assert (task.task_status, task.task_status_data) == ("completed", {"step": "completed"})
    rows = list(TaskStatusChange.objects.filter(task_id=task.task_id).order_by("at", "id"))
    assert [(r.from_status, r.to_status) for r in rows] == [
        ("", "pending"), ("pending", "received"), ("received", "in_progress"), ("in_progress", "completed")
    ]  # fmt: skip
    assert [r.at for r in rows[1:]] == [datetime.fromtimestamp(t0 + d, UTC) for d in (0, 0.25, 0.75)]
    assert all(r.run_id == task.run_id and r.source == "node:node1" for r in rows[1:])
    created = TaskStatusChange.objects.get(task_id=other.task_id, to_status="pending")
    received = TaskStatusChange.objects.get(task_id=other.task_id, to_status="received")
    assert received.at == created.at  # not an hour back: never before the change it follows


@pytest.mark.django_db(transaction=True)
def test_a_writer_on_a_new_database_waits_for_updates_without_failing(
    redis_stream: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # A new database has no offset rows until a shard's first batch. The idle writer waited on no shard at
    # all then (XREAD of nothing is an error), and retried with a backoff of up to 10 s, logging a warning
    # each time, so the first updates of a new install were applied seconds late.
    assert not StreamOffset.objects.exists()
    task_create(task_id="fresh", task_type="backup")
    stopping = threading.Event()
    writer = threading.Thread(target=run_forever, args=(stopping.is_set,), daemon=True)
    with caplog.at_level(logging.INFO, logger="tasks_app.tasks.writer"):
        writer.start()
        try:
            wait_until(lambda: "writer started" in caplog.text, 10, "the writer to start")
            time.sleep(1.5)  # idle, waiting in Redis
            task_update_push(task_id="fresh", status="completed")
            wait_until(lambda: GlobalTask.objects.get(pk="fresh").task_status == "completed", 5, "the update to apply")
        finally:
            stopping.set()
            writer.join(10)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.django_db(transaction=True)
def test_what_the_writer_takes_for_an_outage_rather_than_a_bad_entry() -> None:
    # An outage retries the batch later; anything else dead-letters the entry that met it. A standby the
    # database failed over to (read-only) refused every entry, and each was dead-lettered as bad.
    from django.db import DataError, InternalError, connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLSTATEs are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        try:
            with pytest.raises(InternalError) as read_only, transaction.atomic():
                GlobalTask.objects.create(task_id="ro", task_type="t")
        finally:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        with pytest.raises(DataError) as bad:
            cursor.execute("SELECT 'x'::int")
    assert writer._is_outage(read_only.value)
    assert not writer._is_outage(bad.value)
    assert not writer._is_outage(ValueError("a bug"))
