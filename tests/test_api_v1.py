"""/api/v1/tasks/: the DRF viewset, its filters, cursor pages, history, schema and docs."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tasks_app.models import GlobalTask
from tasks_app.tasks.services import task_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/tasks/"


def test_create_retrieve_update_delete(api_client: Client) -> None:
    resp = api_client.post(
        URL, {"task_type": "block_audit", "task_data": {"blocks": 2}}, content_type="application/json"
    )
    assert resp.status_code == 201, resp.content
    task = resp.json()
    assert task["task_status"] == "pending"
    detail = f"{URL}{task['task_id']}/"
    assert api_client.get(detail).json()["task_data"] == {"blocks": 2}
    resp = api_client.patch(detail, {"task_status": "in_progress"}, content_type="application/json")
    assert resp.status_code == 200 and resp.json()["task_status"] == "in_progress"
    resp = api_client.put(detail, {"task_status": "pending"}, content_type="application/json")
    assert resp.status_code == 409
    assert "in_progress" in resp.json()["detail"]
    assert api_client.delete(detail).status_code == 204
    assert api_client.get(detail).status_code == 404


def test_create_replay_and_conflict(api_client: Client) -> None:
    body = {"task_id": "v1-fixed", "task_type": "t", "task_data": {"a": 1}}
    first = api_client.post(URL, body, content_type="application/json")
    assert first.status_code == 201, first.content
    assert (first.json()["task_id"], first.json()["task_data"]) == ("v1-fixed", {"a": 1})
    # The same body again is a safe retry: the task as it was, not a second one.
    again = api_client.post(URL, body, content_type="application/json")
    assert again.status_code == 200, again.content
    assert again.json() == first.json()
    body["task_data"] = {"a": 2}
    other = api_client.post(URL, body, content_type="application/json")
    assert other.status_code == 409
    assert other.json()["detail"] == "Task 'v1-fixed' already exists with a different body"
    stored = GlobalTask.objects.get(pk="v1-fixed")
    assert stored.task_data == {"a": 1}
    assert list(stored.history.values_list("from_status", "to_status")) == [("", "pending")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_data": [1]}, "task_data"),
        ({"task_status_data": "x"}, "task_status_data"),
        ({"task_status": "finished"}, "task_status"),
        ({"task_id": "bad id"}, "task_id"),
        ({"task_create_timestamp": 5}, "task_create_timestamp"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": "x" * 65}, "task_type"),
    ],
)
def test_bad_input_names_the_field(api_client: Client, body: dict[str, Any], field: str) -> None:
    resp = api_client.post(URL, {"task_type": "t", **body}, content_type="application/json")
    assert resp.status_code == 400
    assert field in resp.json()


def test_malformed_json_is_400(api_client: Client) -> None:
    resp = api_client.post(URL, "{nope", content_type="application/json")
    assert resp.status_code == 400
    assert "Malformed JSON" in resp.json()["detail"]


def test_filters_and_cursor_pages(api_client: Client) -> None:
    for i in range(7):
        task_create(task_type="pg", task_status="completed" if i % 2 else "pending")
    task_create(task_type="other")
    resp = api_client.get(URL, {"task_type": "pg", "task_status": "pending", "page_size": "2"})
    body = resp.json()
    assert len(body["results"]) == 2
    seen = [t["task_id"] for t in body["results"]]
    while body["next"]:
        body = api_client.get(body["next"]).json()
        seen += [t["task_id"] for t in body["results"]]
    assert len(seen) == len(set(seen)) == 4
    assert api_client.get(URL, {"task_status": "bogus"}).status_code == 400
    GlobalTask.objects.filter(task_type="other").update(task_update_timestamp=10**10)
    recent = api_client.get(URL, {"updated_since": str(10**10)}).json()["results"]
    assert [t["task_type"] for t in recent] == ["other"]


def test_history_endpoint(api_client: Client) -> None:
    task, _ = task_create(task_type="t")
    api_client.patch(f"{URL}{task.task_id}/", {"task_status": "completed"}, content_type="application/json")
    rows = api_client.get(f"{URL}{task.task_id}/history/").json()
    assert [(r["from_status"], r["to_status"]) for r in rows] == [("", "pending"), ("pending", "completed")]
    assert rows[1]["at"]
    assert rows[1]["source"] == f"PATCH {URL}{task.task_id}/ by operator"


def test_browsable_api_renders_html(api_client: Client) -> None:
    task_create(task_type="t")
    resp = api_client.get(URL, HTTP_ACCEPT="text/html")
    assert resp.status_code == 200
    assert b"Task List" in resp.content


def test_openapi_schema_and_docs_page(api_client: Client) -> None:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/tasks/" in schema.json()["paths"]
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.redis
def test_health(api_client: Client, redis_stream: Any) -> None:
    resp = api_client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["checks"]["database"] == "ok"


def test_v1_refuses_what_cannot_be_stored(api_client: Client) -> None:
    deep = api_client.post(URL, "[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert deep.status_code == 400
    nul = api_client.post(URL, {"task_data": {"x": "a\x00b"}}, content_type="application/json")
    assert nul.status_code == 400 and "'task_data.x' contains a NUL character" in nul.json()["detail"]
