"""Retention: old finished tasks and their history go in bounded batches, everything else stays,
and the archive is written before the delete commits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from tasks_app.models import GlobalTask, TaskStatusChange, now_ts
from tasks_app.ops import retention
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import StatusUpdate, task_transition
from workers.protocol.queues import PURGE_TASK, SERVER_QUEUE, route_task

pytestmark = pytest.mark.django_db

DAY = 86400


def make(status: str, age_days: float, task_type: str = "t") -> str:
    """A task that reached `status` and was last updated `age_days` ago, with its history."""
    task, _ = task_create(task_type=task_type, task_data={"k": "v"}, source="test")
    if status != "pending":
        task_transition(update=StatusUpdate(task.task_id, status, status_data={"s": status}, source="node1"))
    GlobalTask.objects.filter(pk=task.pk).update(task_update_timestamp=now_ts() - int(age_days * DAY), node="node1")
    return task.task_id


def alive(*ids: str) -> set[str]:
    return set(GlobalTask.objects.filter(task_id__in=ids).values_list("task_id", flat=True))


def test_old_finished_tasks_go_with_their_history_and_the_rest_stays() -> None:
    old = [make("completed", 40), make("failed", 31), make("cancelled", 400)]
    recent = [make("completed", 29), make("failed", 1)]
    unfinished = [make("pending", 90), make("received", 90), make("in_progress", 90)]
    result = retention.purge_finished(days=30, archive_dir="")
    assert result.purged == 3 and result.history_rows == 6 and result.batches == 1 and not result.more
    assert alive(*old) == set()
    assert TaskStatusChange.objects.filter(task_id__in=old).count() == 0
    assert alive(*recent, *unfinished) == {*recent, *unfinished}
    assert TaskStatusChange.objects.filter(task_id__in=recent + unfinished).count() == 2 + 2 + 1 + 2 + 2
    assert retention.purge_finished(days=30, archive_dir="").purged == 0


def test_batches_are_bounded_and_a_pass_stops_at_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [make("completed", 60) for _ in range(25)]
    sizes: list[int] = []
    real = retention._purge_batch

    def spy(batch: list[str], cutoff: int, folder: str) -> tuple[int, int, int, str]:
        sizes.append(len(batch))
        return real(batch, cutoff, folder)

    monkeypatch.setattr(retention, "_purge_batch", spy)
    first = retention.purge_finished(days=30, batch_size=10, max_batches=2, max_seconds=0, archive_dir="")
    assert (first.purged, first.batches, first.more) == (20, 2, True)
    assert sizes == [10, 10]
    rest = retention.purge_finished(days=30, batch_size=10, max_batches=2, max_seconds=0, archive_dir="")
    assert (rest.purged, rest.batches, rest.more) == (5, 1, False)
    assert alive(*ids) == set()
    # A time budget stops a pass after the batch in which it ran out.
    for _ in range(5):
        make("failed", 60)
    timed = retention.purge_finished(days=30, batch_size=2, max_batches=0, max_seconds=1e-9, archive_dir="")
    assert (timed.purged, timed.batches, timed.more) == (2, 1, True)


def test_old_unfinished_rows_do_not_stall_the_walk() -> None:
    # Older than every finished task, and more of them than a batch: the keyset walk passes them once.
    stuck = [make("in_progress", 200) for _ in range(7)]
    done = [make("completed", 100) for _ in range(4)]
    result = retention.purge_finished(days=30, batch_size=3, max_batches=0, max_seconds=0, archive_dir="")
    assert result.purged == 4
    assert alive(*done) == set() and alive(*stuck) == set(stuck)


def test_a_task_revived_since_it_was_picked_is_kept() -> None:
    revived = make("pending", 90)  # as if a retry moved it failed -> pending after the pick
    cutoff = now_ts() - 30 * DAY
    assert retention._purge_batch([revived], cutoff, "") == (0, 0, 0, "")
    assert alive(revived) == {revived}


def test_zero_days_keeps_everything_and_dry_run_only_counts() -> None:
    ids = [make("completed", 400) for _ in range(3)]
    off = retention.purge_finished(days=0)
    assert off.cutoff is None and off.purged == 0
    dry = retention.purge_finished(days=30, dry_run=True)
    assert dry.dry_run and dry.purged == 3
    assert alive(*ids) == set(ids)


def test_archive_lines_hold_the_task_and_its_history(tmp_path: Path) -> None:
    old = [make("completed", 40, "vdag_report"), make("failed", 50, "block_audit")]
    keep = make("completed", 1)
    result = retention.purge_finished(days=30, archive_dir=str(tmp_path / "archive"))
    assert result.purged == 2 and result.archived == 2
    files = list((tmp_path / "archive").glob("tasks-*.jsonl"))
    assert len(files) == 1 and str(files[0]) == result.archive_file
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert sorted(r["task_id"] for r in lines) == sorted(old)
    for row in lines:
        assert set(row) >= {*retention.ARCHIVE_FIELDS, "history", "archived_at"}
        assert row["node"] == "node1" and row["task_data"] == {"k": "v"}
        assert [h["to_status"] for h in row["history"]] == ["pending", row["task_status"]]
        assert row["history"][0]["source"] == "test" and row["history"][1]["source"] == "node1"
        assert row["task_status_data"] == {"s": row["task_status"]}
    assert alive(keep) == {keep}


def test_a_crash_after_the_archive_write_duplicates_a_line_never_loses_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = make("completed", 40)
    real = retention._delete_where_task_id
    calls = {"n": 0}

    def crash_once(table: str, column: str, ids: list[str]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed between the archive write and the delete")
        return real(table, column, ids)

    monkeypatch.setattr(retention, "_delete_where_task_id", crash_once)
    with pytest.raises(RuntimeError):
        retention.purge_finished(days=30, archive_dir=str(tmp_path))
    assert alive(task_id) == {task_id}  # rolled back: nothing deleted
    assert TaskStatusChange.objects.filter(task_id=task_id).count() == 2
    retention.purge_finished(days=30, archive_dir=str(tmp_path))
    assert alive(task_id) == set()
    (archive,) = tmp_path.glob("tasks-*.jsonl")
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [r["task_id"] for r in lines] == [task_id, task_id]


def test_an_archive_that_cannot_be_written_deletes_nothing(tmp_path: Path) -> None:
    task_id = make("completed", 40)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(OSError):
        retention.purge_finished(days=30, archive_dir=str(blocker))
    assert alive(task_id) == {task_id}


def test_a_torn_last_line_stays_on_its_own(tmp_path: Path) -> None:
    task_id = make("completed", 40)
    path = tmp_path / f"tasks-{datetime.now(UTC):%Y-%m-%d}.jsonl"
    path.write_text('{"task_id": "torn')  # a crash mid-write, no newline
    retention.purge_finished(days=30, archive_dir=str(tmp_path))
    lines = path.read_text().splitlines()
    assert lines[0] == '{"task_id": "torn' and json.loads(lines[1])["task_id"] == task_id


def test_purge_tasks_command(settings: Any) -> None:
    settings.TASKHUB_ARCHIVE_DIR = ""
    ids = [make("completed", 40) for _ in range(3)]
    out = StringIO()
    call_command("purge_tasks", "--days", "30", "--dry-run", stdout=out)
    assert "Would purge 3 finished task(s)" in out.getvalue()
    assert alive(*ids) == set(ids)
    out = StringIO()
    call_command("purge_tasks", "--days", "30", "--batch-size", "2", stdout=out)
    assert "Purged 3 finished task(s) and 6 history row(s)" in out.getvalue() and "2 batch(es)" in out.getvalue()
    assert alive(*ids) == set()
    out = StringIO()
    call_command("purge_tasks", "--days", "0", stdout=out)
    assert "Retention is off" in out.getvalue()


def test_the_scheduler_runs_it_on_the_server_queue(settings: Any) -> None:
    from tasks_app.ops.scheduled import purge_finished

    settings.TASKHUB_RETENTION_DAYS = 30
    settings.TASKHUB_ARCHIVE_DIR = ""
    make("cancelled", 45)
    assert purge_finished() == 1
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-finished"]
    assert entry["task"] == PURGE_TASK == "taskhub.purge_finished"
    assert route_task(PURGE_TASK, (), {}, {}) == {"queue": SERVER_QUEUE}
