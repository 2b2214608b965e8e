"""The one transition function, on the real database: order, duplicates, history, concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tasks_app.models import GlobalTask, TaskStatusChange
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import StatusUpdate, task_transition, task_transition_many
from workers.protocol.status import Verdict


def history(task_id: str) -> list[tuple[str, str]]:
    return list(
        TaskStatusChange.objects.filter(task_id=task_id).order_by("at", "id").values_list("from_status", "to_status")
    )


@pytest.mark.django_db
def test_applies_in_order_and_records_each_change() -> None:
    task, _ = task_create(task_type="t")
    outcomes = task_transition_many(
        updates=[
            StatusUpdate(task.task_id, "received", source="node1"),
            StatusUpdate(task.task_id, "in_progress", {"percent": 10}, source="node1"),
            StatusUpdate(task.task_id, "completed", {"result": 42}, source="node1"),
        ]
    )
    assert [o.verdict for o in outcomes] == [Verdict.APPLY] * 3
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert task.task_status_data == {"result": 42}
    assert history(task.task_id) == [("", "pending"), ("pending", "received"), ("received", "in_progress"),
                                     ("in_progress", "completed")]  # fmt: skip
    assert set(TaskStatusChange.objects.filter(task_id=task.task_id).values_list("source", flat=True)) >= {"node1"}


@pytest.mark.django_db
def test_late_and_duplicate_updates_never_move_a_task_backwards() -> None:
    task, _ = task_create(task_type="t")
    task_transition_many(
        updates=[
            StatusUpdate(task.task_id, "completed", {"result": 1}),
            StatusUpdate(task.task_id, "in_progress", {"percent": 50}),  # late
            StatusUpdate(task.task_id, "completed", {"result": 2}),  # duplicate
            StatusUpdate(task.task_id, "pending"),  # not a retry
            StatusUpdate(task.task_id, "failed", {"error": "late"}),
        ]
    )
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert task.task_status_data == {"result": 1}
    assert history(task.task_id) == [("", "pending"), ("pending", "completed")]


@pytest.mark.django_db
def test_same_non_final_status_with_new_data_is_a_progress_row() -> None:
    """A repeated status with new data is progress: the data replaces the task's, and one history row
    (from == to) keeps its "progress" object for the event stream. The same data again is no row."""
    task, _ = task_create(task_type="t", task_status="in_progress")
    data = {"progress": {"percent": 70.0, "message": "copying"}, "other": 1}
    outcome = task_transition(update=StatusUpdate(task.task_id, "in_progress", data))
    assert outcome.verdict is Verdict.SAME
    task.refresh_from_db()
    assert task.task_status_data == data
    rows = list(TaskStatusChange.objects.filter(task_id=task.task_id).order_by("id"))
    assert [(r.from_status, r.to_status, r.progress) for r in rows] == [
        ("", "in_progress", None),
        ("in_progress", "in_progress", {"percent": 70.0, "message": "copying"}),
    ]
    assert task_transition(update=StatusUpdate(task.task_id, "in_progress", data)).verdict is Verdict.SAME
    assert task_transition(update=StatusUpdate(task.task_id, "in_progress", {"percent": 80})).verdict is Verdict.SAME
    rows = list(TaskStatusChange.objects.filter(task_id=task.task_id).order_by("id"))
    assert len(rows) == 3 and rows[2].progress is None  # new data without a progress object: a row all the same


@pytest.mark.django_db
def test_explicit_retry_is_the_only_way_out_of_failed() -> None:
    task, _ = task_create(task_type="t", task_status="failed")
    assert task_transition(update=StatusUpdate(task.task_id, "pending")).verdict is Verdict.REJECT
    assert task_transition(update=StatusUpdate(task.task_id, "pending", retry=True)).verdict is Verdict.APPLY
    task.refresh_from_db()
    assert task.task_status == "pending"


@pytest.mark.django_db
def test_unknown_task_is_reported_not_raised() -> None:
    outcome = task_transition(update=StatusUpdate("missing", "completed"))
    assert outcome.verdict is None


@pytest.mark.django_db
def test_update_timestamp_moves_and_create_timestamp_does_not() -> None:
    task, _ = task_create(task_type="t")
    GlobalTask.objects.filter(pk=task.pk).update(task_update_timestamp=1, task_create_timestamp=1)
    task_transition(update=StatusUpdate(task.task_id, "received"))
    task.refresh_from_db()
    assert task.task_create_timestamp == 1
    assert task.task_update_timestamp > 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_cannot_both_win() -> None:
    """Two writers race to finish the same task differently: exactly one final status is recorded."""
    for _ in range(5):
        task, _ = task_create(task_type="race")
        barrier = threading.Barrier(2)
        verdicts: list[Verdict | None] = []

        def finish(
            status: str,
            task_id: str = task.task_id,
            barrier: threading.Barrier = barrier,
            verdicts: list[Verdict | None] = verdicts,
        ) -> None:
            try:
                barrier.wait()
                verdicts.append(task_transition(update=StatusUpdate(task_id, status)).verdict)
            finally:
                connection.close()

        threads = [threading.Thread(target=finish, args=(s,)) for s in ("completed", "failed")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(v.value for v in verdicts if v is not None) == ["apply", "reject"]
        finals = [to for _, to in history(task.task_id) if to in ("completed", "failed")]
        assert len(finals) == 1
        task.refresh_from_db()
        assert task.task_status == finals[0]
