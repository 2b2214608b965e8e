"""Cursor pages of both lists (the seed's GET /tasks and /api/v1/tasks/) around tasks that share their
create time: every task once, in (time, task_id) order, whichever page boundary falls inside a tie.
The cursor's condition is written as a range plus a tie-break (selectors.after_cursor), so that
PostgreSQL starts its index scan at the cursor; these pin down that it selects the same rows."""

from __future__ import annotations

import pytest
from django.test import Client

from tasks_app.models import GlobalTask
from tasks_app.tasks.services import task_create

pytestmark = pytest.mark.django_db

# Create times (seconds for the seed list, nanoseconds for v1): one task before the tie, five in it,
# two after, so that pages of 2 end inside the tie, at its edges and after it.
_TIMES = [100, 200, 200, 200, 200, 200, 300, 300]


def _tasks(task_type: str, column: str) -> list[str]:
    """Tasks of `task_type` with _TIMES in `column`, in the order both lists must return them."""
    ids = [task_create(task_type=task_type)[0].task_id for _ in _TIMES]
    for task_id, at in zip(ids, _TIMES, strict=True):
        GlobalTask.objects.filter(pk=task_id).update(**{column: at})
    return [t for _, t in sorted(zip(_TIMES, ids, strict=True))]


def test_seed_list_pages_through_ties_in_order(client: Client) -> None:
    expected = _tasks("tie_seed", "task_create_timestamp")
    seen: list[str] = []
    url: str | None = "/tasks?task_type=tie_seed&limit=2"
    while url:
        body = client.get(url).json()
        assert body["success"] is True
        seen += [t["task_id"] for t in body["data"]]
        url = body["next"]
    assert seen == expected


def test_v1_list_pages_through_ties_in_order(api_client: Client) -> None:
    expected = _tasks("tie_v1", "created_ns")
    body = api_client.get("/api/v1/tasks/", {"task_type": "tie_v1", "page_size": "2"}).json()
    seen = [t["task_id"] for t in body["results"]]
    while body["next"]:
        body = api_client.get(body["next"]).json()
        seen += [t["task_id"] for t in body["results"]]
    assert seen == expected
    # Following from the last cursor finds nothing new, and keeps the cursor.
    quiet = api_client.get("/api/v1/tasks/", {"task_type": "tie_v1", "after": body["resume"]}).json()
    assert quiet["results"] == [] and quiet["resume"] == body["resume"]
