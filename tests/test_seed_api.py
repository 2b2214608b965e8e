"""The seed API contract: paths, envelopes and status codes that the reference service's clients use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tasks_app.models import GlobalTask, TaskStatusChange
from tasks_app.tasks.writer import run_once

pytestmark = pytest.mark.django_db

SEED_FIELDS = {
    "task_id",
    "task_data",
    "task_type",
    "task_update_timestamp",
    "task_create_timestamp",
    "task_status",
    "task_status_data",
}


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def put(client: Client, path: str, body: Any) -> Any:
    return client.put(path, data=json.dumps(body), content_type="application/json")


def create(client: Client, **body: Any) -> str:
    body.setdefault("task_type", "example_task_type")
    resp = post(client, "/task", body)
    assert resp.status_code == 200, resp.content
    return str(resp.json()["data"]["task_id"])


def test_create_as_in_the_seed(client: Client) -> None:
    resp = post(
        client,
        "/task",
        {
            "task_data": {"key": "value"},
            "task_type": "example_task_type",
            "task_status": "pending",
            "task_status_data": {"info": "status info"},
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    assert body["data"]["message"] == "Task created"
    task = GlobalTask.objects.get(pk=body["data"]["task_id"])
    assert task.task_data == {"key": "value"}
    assert task.task_status == "pending"
    assert task.task_create_timestamp == task.task_update_timestamp > 1_700_000_000
    assert list(task.history.values_list("from_status", "to_status")) == [("", "pending")]


def test_create_defaults(client: Client) -> None:
    resp = client.post("/task", data='{"task_type": "t"}', content_type="application/json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["success"] is True and resp.json()["data"]["message"] == "Task created"
    task_id = resp.json()["data"]["task_id"]
    got = client.get(f"/task/{task_id}")
    assert got.status_code == 200 and got.json()["success"] is True
    task = got.json()["data"]
    assert set(task) == SEED_FIELDS
    assert task["task_id"] == task_id
    assert task["task_data"] == {} and task["task_type"] == "t" and task["task_status_data"] == {}
    assert task["task_status"] == "pending"
    stored = GlobalTask.objects.get(pk=task_id)
    assert (stored.task_type, stored.task_data, stored.task_status, stored.task_status_data) == ("t", {}, "pending", {})


def test_get_returns_exactly_the_seven_fields(client: Client) -> None:
    task_id = create(client, task_type="block_audit", task_data={"size": 3})
    resp = client.get(f"/task/{task_id}")
    assert resp.status_code == 200
    assert resp.json()["success"] is True
    assert set(resp.json()["data"]) == SEED_FIELDS


def test_client_chosen_id_makes_create_retries_safe(client: Client) -> None:
    body = {"task_id": "retry-1", "task_type": "vdag_report", "task_data": {"a": 1}}
    first = post(client, "/task", body)
    again = post(client, "/task", body)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert GlobalTask.objects.filter(pk="retry-1").count() == 1
    other = post(client, "/task", {**body, "task_data": {"a": 2}})
    assert other.status_code == 409
    assert other.json()["success"] is False
    assert "different body" in other.json()["message"]


def test_put_updates_fields_and_status(client: Client) -> None:
    task_id = create(client, task_type="t", task_data={"key": "value"})
    body = {"task_data": {"updated_key": "updated_value"}, "task_status": "in_progress"}
    resp = put(client, f"/task/{task_id}", body)
    assert resp.status_code == 200
    assert resp.json() == {"success": True, "data": {"message": "Task updated", "modified_count": 1}}
    task = GlobalTask.objects.get(pk=task_id)
    assert task.task_data == {"updated_key": "updated_value"}
    assert task.task_status == "in_progress"
    assert TaskStatusChange.objects.filter(task_id=task_id, to_status="in_progress").count() == 1


def test_put_cannot_move_a_finished_task(client: Client) -> None:
    task_id = create(client, task_type="t")
    assert put(client, f"/task/{task_id}", {"task_status": "completed"}).status_code == 200
    resp = put(client, f"/task/{task_id}", {"task_status": "in_progress"})
    assert resp.status_code == 409
    assert "completed" in resp.json()["message"]
    assert GlobalTask.objects.get(pk=task_id).task_status == "completed"


def test_delete(client: Client) -> None:
    task_id = create(client)
    resp = client.delete(f"/task/{task_id}")
    assert resp.json() == {"success": True, "data": {"message": "Task deleted"}}
    assert client.delete(f"/task/{task_id}").status_code == 404
    assert client.get(f"/task/{task_id}").status_code == 404


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_unknown_id_is_404_in_the_envelope(client: Client, method: str) -> None:
    if method == "put":
        resp = put(client, "/task/no-such-task", {"task_status": "completed"})
    else:
        resp = getattr(client, method)("/task/no-such-task")
    assert resp.status_code == 404
    assert resp.json()["success"] is False
    assert "no-such-task" in resp.json()["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{bad json", "Malformed JSON"),
        ("", "empty"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ('{"task_type": "t", "task_data": [1]}', "'task_data' must be a JSON object"),
        ('{"task_type": "t", "task_data": "x"}', "'task_data' must be a JSON object"),
        ('{"task_type": "t", "task_status_data": 5}', "'task_status_data' must be a JSON object"),
        ('{"task_type": "t", "task_status": "done"}', "'task_status' must be one of"),
        ('{"task_type": 7}', "'task_type' is required: a string"),
        ("{}", "'task_type' is required"),
        ('{"task_type": ""}', "'task_type' is required"),
        ('{"task_type": "a\\nb"}', "'task_type' is required: a string of 1-64 characters, no control characters"),
        ('{"task_id": "has spaces"}', "'task_id' must be"),
        ('{"colour": "red"}', "Unknown field(s): colour"),
    ],
)
def test_create_rejects_bad_input_with_a_clear_400(client: Client, body: str, needle: str) -> None:
    resp = client.post("/task", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["success"] is False
    assert needle in resp.json()["message"]
    assert GlobalTask.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"task_status": "bogus"}', "'task_status' must be one of"),
        ('{"task_data": []}', "'task_data' must be a JSON object"),
        ("{}", "Nothing to update"),
        ("nope", "Malformed JSON"),
        ('{"task_create_timestamp": 1}', "Unknown field(s): task_create_timestamp"),
    ],
)
def test_put_rejects_bad_input(client: Client, body: str, needle: str) -> None:
    task_id = create(client)
    resp = client.put(f"/task/{task_id}", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert needle in resp.json()["message"]


def test_body_over_the_limit_is_refused(client: Client, settings: Any) -> None:
    settings.TASKHUB_MAX_BODY_BYTES = 1000
    resp = post(client, "/task", {"task_data": {"blob": "x" * 2000}})
    assert resp.status_code == 413
    assert resp.json()["success"] is False
    assert "limit" in resp.json()["message"]
    assert GlobalTask.objects.count() == 0


def test_wrong_method_is_405(client: Client) -> None:
    resp = client.get("/task")
    assert resp.status_code == 405
    assert resp.json()["success"] is False


def test_list_filters_by_type_and_status(client: Client) -> None:
    a = create(client, task_type="vdag_report")
    create(client, task_type="block_audit")
    c = create(client, task_type="vdag_report", task_status="completed")
    resp = client.get("/tasks", {"task_type": "vdag_report", "task_status": "pending"})
    assert resp.status_code == 200
    assert [t["task_id"] for t in resp.json()["data"]] == [a]
    only_type = client.get("/tasks", {"task_type": "vdag_report"}).json()["data"]
    assert {t["task_id"] for t in only_type} == {a, c}
    assert len(client.get("/tasks").json()["data"]) == 3


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"task_status": "bogus"}, "'task_status' must be one of"),
        ({"limit": "ten"}, "'limit' must be an integer"),
        ({"limit": "0"}, "'limit' must be between"),
        ({"updated_since": "yesterday"}, "'updated_since' must be an integer"),
        ({"after": "%%%"}, "not a cursor"),
        ({"status": "pending"}, "Unknown field(s): status"),
    ],
)
def test_list_rejects_bad_filters(client: Client, query: dict[str, str], needle: str) -> None:
    resp = client.get("/tasks", query)
    assert resp.status_code == 400
    assert needle in resp.json()["message"]


def test_list_pages_through_everything_once(client: Client) -> None:
    ids = {create(client, task_type="p") for _ in range(25)}
    seen: list[str] = []
    url: str | None = "/tasks?task_type=p&limit=10"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += [t["task_id"] for t in body["data"]]
        url = body["next"]
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)


def test_list_filters_by_any_status_and_its_aliases(client: Client) -> None:
    done = create(client, task_type="a", task_status="completed")
    create(client, task_type="a")
    for name in ("completed", "complete", "Completed"):
        assert [t["task_id"] for t in client.get("/tasks", {"task_status": name}).json()["data"]] == [done]
    assert client.get("/tasks", {"task_status": "cancelling"}).json()["data"] == []


def test_list_updated_since(client: Client) -> None:
    old = create(client, task_type="u")
    new = create(client, task_type="u")
    GlobalTask.objects.filter(pk=old).update(task_update_timestamp=1000)
    data = client.get("/tasks", {"updated_since": "2000"}).json()["data"]
    assert [t["task_id"] for t in data] == [new]


@pytest.mark.redis
def test_task_update_is_queued_then_applied_by_a_writer(client: Client, redis_stream: Any) -> None:
    task_id = create(client, task_type="t")
    resp = post(client, "/task_update", {"task_id": task_id, "status": "completed", "task_status_data": {"out": 1}})
    assert resp.status_code == 200
    assert resp.json() == {"success": True, "message": "Task update pushed successfully"}
    assert GlobalTask.objects.get(pk=task_id).task_status == "pending"  # asynchronous
    assert run_once() == 1
    task = GlobalTask.objects.get(pk=task_id)
    assert task.task_status == "completed"
    assert task.task_status_data == {"out": 1}


@pytest.mark.redis
@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"status": "completed"}, 400, "'task_id' is required"),
        ({"task_id": "X"}, 400, "'status' is required"),
        ({"task_id": "X", "status": "finished"}, 400, "'status' must be one of"),
        ({"task_id": "X", "status": "completed", "task_status_data": [1]}, 400, "must be a JSON object"),
        ({"task_id": "12345", "status": "completed"}, 404, "not found"),
    ],
)
def test_task_update_rejects_bad_input(
    client: Client, redis_stream: Any, body: dict[str, Any], code: int, needle: str
) -> None:
    GlobalTask.objects.create(task_id="X")
    resp = post(client, "/task_update", body)
    assert resp.status_code == code
    assert resp.json()["success"] is False
    assert needle in resp.json()["message"]
    assert run_once() == 0


def test_task_update_is_503_when_redis_cannot_take_it(client: Client, settings: Any) -> None:
    # A port nothing listens on: the update cannot be queued, and the client must hear so.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    task_id = create(client)
    resp = post(client, "/task_update", {"task_id": task_id, "status": "completed"})
    assert resp.status_code == 503
    assert resp.json()["success"] is False
    assert "could not be queued" in resp.json()["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"task_data": {"x": NaN}}', "Malformed JSON"),
        ('{"task_data": {"x": Infinity}}', "Malformed JSON"),
        ('{"task_data": {"x": "a\\u0000b"}}', "NUL"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels", id="deep"),
    ],
)
def test_bodies_no_database_can_store_are_400(client: Client, body: str, needle: str) -> None:
    resp = client.post("/task", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert needle in resp.json()["message"]


def test_nul_in_the_url_is_400(client: Client) -> None:
    refused = {"success": False, "message": "NUL characters are not allowed in URLs"}
    by_id = client.get("/task/abc%00def")
    assert (by_id.status_code, by_id.json()) == (400, refused)
    listed = client.get("/tasks", {"task_type": "a\x00b"})
    assert (listed.status_code, listed.json()) == (400, refused)
