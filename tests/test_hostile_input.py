"""Issue 8's reproductions, each replayed as a regression test (on SQLite and PostgreSQL): hostile pages
(cross-site "simple requests"), text no database or renderer can round-trip, credentials that were
ignored, writes that did not do what was asked but answered 200. Each must now be a clear 4xx with a
message, or work; never a 500 and never a silent 200.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from tasks_app.fleet.models import Cluster, Node, Volume
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.tasks import services, stream
from tasks_app.tasks.models import GlobalTask
from tasks_app.tasks.writer import run_once
from workers.protocol.messages import Origin, StatusUpdate

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

EVIL = "http://evil.example"
DELETE_VOLUME = {"task_type": "volume_delete", "task_data": {"cluster": "demo", "name": "secvol1"}}


@pytest.fixture(autouse=True)
def demo(redis_stream: redis.Redis) -> Cluster:
    cluster = cluster_ensure(name="demo")
    for name in ("node1", "node2", "node3"):
        node_register(cluster=cluster, name=name)
    return cluster


def send(
    client: Client, method: str, path: str, body: Any, content_type: str = "application/json", **headers: Any
) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.generic(method, path, raw, content_type=content_type, **headers)


def tracked(client: Client, **body: Any) -> str:
    resp = send(client, "POST", "/task", {"task_type": "backup", **body})
    assert resp.status_code == 200, resp.content
    return str(resp.json()["data"]["task_id"])


def refused(resp: Any, status: int, needle: str) -> None:
    """A seed envelope refusing the request, with a message that says why."""
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert body["success"] is False
    assert needle in body["message"], body["message"]


# --- 1. cross-site request forgery through the anonymous seed API ------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_simple_request_body_is_415_and_writes_nothing(client: Client, content_type: str) -> None:
    refused(send(client, "POST", "/task", DELETE_VOLUME, content_type=content_type), 415, "must be application/json")
    # From a page on another site it is refused before its body is even looked at.
    forged = send(client, "POST", "/task", DELETE_VOLUME, content_type=content_type, HTTP_ORIGIN=EVIL)
    refused(forged, 403, "cannot write anonymously")
    assert not GlobalTask.objects.exists()


def test_task_update_takes_only_json(client: Client) -> None:
    task_id = tracked(client)
    resp = send(client, "POST", "/task_update", {"task_id": task_id, "status": "cancelled"}, content_type="text/plain")
    refused(resp, 415, "application/json")
    put = send(client, "PUT", f"/task/{task_id}", {"task_status": "failed"}, content_type="text/plain")
    refused(put, 415, "application/json")
    assert GlobalTask.objects.get(pk=task_id).task_status == "pending"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"HTTP_ORIGIN": EVIL}, "Origin 'http://evil.example' is not this server"),
        ({"HTTP_ORIGIN": "null"}, "Origin 'null'"),
        ({"HTTP_SEC_FETCH_SITE": "cross-site"}, "Sec-Fetch-Site: cross-site"),
    ],
)
def test_a_cross_site_browser_request_never_writes_anonymously(
    client: Client, headers: dict[str, Any], why: str
) -> None:
    task_id = tracked(client)
    refused(send(client, "POST", "/task", DELETE_VOLUME, **headers), 403, why)
    refused(send(client, "POST", "/task_update", {"task_id": task_id, "status": "cancelled"}, **headers), 403, why)
    refused(send(client, "PUT", f"/task/{task_id}", {"task_status": "failed"}, **headers), 403, why)
    refused(client.delete(f"/task/{task_id}", **headers), 403, "cannot write anonymously")
    assert list(GlobalTask.objects.values_list("task_id", "task_status")) == [(task_id, "pending")]
    # Reading is not writing: a page cannot read the answer without CORS, which taskhub does not send.
    assert client.get(f"/task/{task_id}", **headers).status_code == 200


def test_same_origin_and_non_browser_requests_still_write(client: Client) -> None:
    same = send(client, "POST", "/task", {"task_type": "t"}, HTTP_ORIGIN="http://testserver")
    assert same.status_code == 200 and same.json()["data"]["message"] == "Task created"
    user_typed = send(client, "POST", "/task", {"task_type": "t"}, HTTP_SEC_FETCH_SITE="none")
    assert user_typed.status_code == 200
    assert GlobalTask.objects.count() == 2


def test_a_token_may_write_from_any_origin(client: Client, operator_token: str) -> None:
    # A page cannot attach an Authorization header cross-site without CORS, so a token is never a forgery.
    resp = send(
        client, "POST", "/task", {"task_type": "t"}, HTTP_ORIGIN=EVIL, HTTP_AUTHORIZATION=f"Token {operator_token}"
    )
    assert resp.status_code == 200
    assert GlobalTask.objects.get(pk=resp.json()["data"]["task_id"]).task_type == "t"


def test_v1_takes_only_json(api_client: Client) -> None:
    form = api_client.post("/api/v1/tasks/", {"task_type": "t"})  # the test client's multipart
    assert form.status_code == 415 and "Unsupported media type" in form.json()["detail"]
    empty_list = send(api_client, "POST", "/api/v1/tasks/", b"[]", content_type="multipart/form-data; boundary=x")
    assert empty_list.status_code == 415
    assert not GlobalTask.objects.exists()


# --- 2. text that cannot be encoded --------------------------------------------------------------------

LONE = [
    ('{"task_type": "x", "task_data": {"a": "\\ud800"}}', "'task_data.a' contains a lone surrogate (\\ud800)"),
    ('{"task_type": "\\ud83d"}', "'task_type' contains a lone surrogate (\\ud83d)"),
    ('{"task_type": "x", "task_data": {"\\udc00": 1}}', "'task_data' contains a lone surrogate"),
    ('{"task_type": "x", "task_status_data": {"l": ["ok", "\\udfff"]}}', "'task_status_data.l[1]' contains a lone"),
    ('{"task_type": "a\\u0000b"}', "'task_type' contains a NUL character"),
    ('{"task_type": "x", "task_data": {"a": "\\u0000"}}', "'task_data.a' contains a NUL character"),
]


@pytest.mark.parametrize(("body", "needle"), LONE)
def test_the_seed_api_refuses_text_it_cannot_round_trip(client: Client, body: str, needle: str) -> None:
    refused(send(client, "POST", "/task", body), 400, needle)
    assert not GlobalTask.objects.exists()


def test_raw_surrogate_bytes_are_refused(client: Client) -> None:
    # UTF-8 for U+D800, which Python's json reads with "surrogatepass" into a lone surrogate.
    body = b'{"task_type": "x", "task_data": {"a": "\xed\xa0\x80"}}'
    refused(send(client, "POST", "/task", body), 400, "lone surrogate")
    v1 = Client()
    assert v1.post("/api/v1/tasks/", body, content_type="application/json").status_code == 401  # no credentials
    assert not GlobalTask.objects.exists()


@pytest.mark.parametrize(("body", "needle"), LONE)
def test_v1_refuses_it_before_any_row_is_written(api_client: Client, body: str, needle: str) -> None:
    resp = send(api_client, "POST", "/api/v1/tasks/", body)
    assert resp.status_code == 400, resp.content
    assert needle.split(" contains")[0].split(" is required")[0].strip("'") in json.dumps(resp.json())
    assert not GlobalTask.objects.exists()  # a client's retry is safe: nothing was committed


def test_task_update_refuses_it_at_once_rather_than_losing_it(client: Client, redis_stream: redis.Redis) -> None:
    task_id = tracked(client)
    body = '{"task_id": "' + task_id + '", "status": "completed", "task_status_data": {"r": "\\udc00"}}'
    refused(send(client, "POST", "/task_update", body), 400, "'task_status_data.r' contains a lone surrogate")
    put = '{"task_status": "completed", "task_status_data": {"r": "\\udc00"}}'
    refused(send(client, "PUT", f"/task/{task_id}", put), 400, "lone surrogate")
    run_once()
    assert GlobalTask.objects.get(pk=task_id).task_status == "pending"


def test_every_page_renders_what_was_accepted(client: Client, api_client: Client, admin_client: Client) -> None:
    # Text outside the Basic Multilingual Plane, sent as a proper surrogate pair, is text: it is kept.
    task_id = tracked(client, task_data={"emoji": "\U0001f600", "deep": [[[[["ok"]]]]]})
    assert client.get(f"/task/{task_id}").json()["data"]["task_data"]["emoji"] == "\U0001f600"
    assert api_client.get("/api/v1/tasks/").status_code == 200
    assert api_client.get(f"/api/v1/tasks/{task_id}/").json()["task_data"]["emoji"] == "\U0001f600"
    assert api_client.get(f"/api/v1/tasks/{task_id}/", HTTP_ACCEPT="text/html").status_code == 200
    change = admin_client.get(f"/admin/tasks_app/globaltask/{task_id}/change/")
    assert change.status_code == 200 and "\U0001f600" in change.content.decode()


# --- 3 and 8. writes that did not do what was asked ------------------------------------------------------


def test_put_cannot_complete_an_executed_task(api_client: Client, client: Client) -> None:
    resp = send(api_client, "POST", "/api/v1/tasks/", {"task_type": "noop", "task_data": {"node": "node1"}})
    assert resp.status_code == 201
    task_id = resp.json()["task_id"]
    refused(
        send(client, "PUT", f"/task/{task_id}", {"task_status": "completed"}), 409, "its status comes from its node"
    )
    assert GlobalTask.objects.get(pk=task_id).task_status == "pending"


def test_a_tracked_volume_create_completed_by_put_is_a_record_not_a_volume(client: Client) -> None:
    task_id = tracked(client, task_type="volume_create", task_data={"cluster": "demo", "name": "v1"})
    resp = send(client, "PUT", f"/task/{task_id}", {"task_status": "completed", "task_status_data": {"ok": 1}})
    assert resp.json() == {"success": True, "data": {"message": "Task updated", "modified_count": 1}}
    task = GlobalTask.objects.get(pk=task_id)
    assert (task.task_status, task.task_status_data) == ("completed", {"ok": 1})
    assert not Volume.objects.exists()  # no completion hook for a record its caller drives
    # (A node's completion whose hook fails stores the hook's error: tests/test_cluster_api.py.)


def test_a_completed_result_is_settled(client: Client) -> None:
    task_id = tracked(client)
    assert (
        send(client, "PUT", f"/task/{task_id}", {"task_status": "completed", "task_status_data": {"r": 1}}).status_code
        == 200
    )
    again = send(client, "PUT", f"/task/{task_id}", {"task_status": "completed", "task_status_data": {"r": 2}})
    refused(again, 409, "already completed: its result (task_status_data) is settled")
    refused(send(client, "PUT", f"/task/{task_id}", {"task_status_data": {"r": 3}}), 409, "is settled")
    # Repeating what is stored is a client's retry, not a change.
    same = send(client, "PUT", f"/task/{task_id}", {"task_status": "completed", "task_status_data": {"r": 1}})
    assert same.status_code == 200
    assert GlobalTask.objects.get(pk=task_id).task_status_data == {"r": 1}


def test_task_update_answers_the_status_rules_at_once(client: Client, redis_stream: redis.Redis) -> None:
    task_id = tracked(client, task_status="completed", task_status_data={"r": 1})
    backwards = send(client, "POST", "/task_update", {"task_id": task_id, "status": "in_progress"})
    refused(backwards, 409, "Cannot change task_status from 'completed' to 'in_progress'")
    other = send(
        client, "POST", "/task_update", {"task_id": task_id, "status": "completed", "task_status_data": {"r": 9}}
    )
    refused(other, 409, "is settled")
    duplicate = send(client, "POST", "/task_update", {"task_id": task_id, "status": "complete"})
    assert duplicate.json() == {"success": True, "message": "Task update pushed successfully"}
    run_once()
    assert GlobalTask.objects.get(pk=task_id).task_status_data == {"r": 1}


# --- 6. authentication that was ignored --------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer deadbeef", "Token deadbeef", "Basic YWRtaW46YWRtaW4=", "Digest x", "Token"])
def test_a_credential_that_is_sent_is_checked_everywhere(client: Client, header: str) -> None:
    refused(client.get("/tasks", HTTP_AUTHORIZATION=header), 401, "")
    refused(send(client, "POST", "/task", {"task_type": "t"}, HTTP_AUTHORIZATION=header), 401, "")
    v1 = client.get("/api/v1/tasks/", HTTP_AUTHORIZATION=header)
    assert v1.status_code == 401 and v1["WWW-Authenticate"] == 'Token realm="taskhub"'
    assert client.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 401
    assert not GlobalTask.objects.exists()


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
def test_the_same_schemes_work_on_every_surface(client: Client, operator: Any, scheme: str) -> None:
    key = Token.objects.get_or_create(user=operator)[0].key
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"{scheme} {key}"}
    created = send(client, "POST", "/api/v1/tasks/", {"task_type": "t", "execute": False}, **auth)
    assert created.status_code == 201, created.content
    assert client.get("/tasks", **auth).json()["data"][0]["task_id"] == created.json()["task_id"]
    assert client.get("/metrics", **auth).status_code == 200


# --- 7. nesting ------------------------------------------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"n": value}
    return value  # type: ignore[no-any-return]


def test_one_depth_limit_on_every_write_path(
    client: Client, api_client: Client, admin_client: Client, settings: Any
) -> None:
    too_deep = nested(settings.TASKHUB_MAX_JSON_DEPTH + 1)
    refused(
        send(client, "POST", "/task", {"task_type": "t", "task_data": too_deep}), 400, "nested deeper than 32 levels"
    )
    v1 = send(api_client, "POST", "/api/v1/tasks/", {"task_type": "t", "task_data": too_deep})
    assert v1.status_code == 400 and "nested deeper than 32 levels" in v1.json()["detail"]
    task_id = tracked(client)
    update = {"task_id": task_id, "status": "in_progress", "task_status_data": nested(932)}
    refused(send(client, "POST", "/task_update", update), 400, "nested deeper")
    admin = admin_client.post(
        f"/admin/tasks_app/globaltask/{task_id}/change/",
        {"task_type": "t", "task_status": "pending", "task_data": json.dumps(too_deep), "task_status_data": "{}"},
    )
    assert admin.status_code == 200 and "nested deeper than 32 levels" in admin.content.decode()
    assert GlobalTask.objects.get(pk=task_id).task_data == {}
    # At the limit it is accepted, and every page renders it.
    deepest = tracked(client, task_data=nested(settings.TASKHUB_MAX_JSON_DEPTH - 1))
    assert admin_client.get(f"/admin/tasks_app/globaltask/{deepest}/change/").status_code == 200
    assert api_client.get(f"/api/v1/tasks/{deepest}/", HTTP_ACCEPT="text/html").status_code == 200


def test_the_admin_refuses_a_lone_surrogate(admin_client: Client) -> None:
    resp = admin_client.post(
        "/admin/tasks_app/globaltask/add/",
        {"task_type": "t", "task_status": "pending", "task_data": '{"a": "\\ud800"}', "task_status_data": "{}"},
    )
    assert resp.status_code == 200 and "lone surrogate" in resp.content.decode()
    assert not GlobalTask.objects.exists()


# Text a JSON input of the admin cannot even parse: nested past the parser's recursion, or a number past
# Python's 4,300 digits. Refused on the input, the text shown again, never a 500 (the API's answer is a 400).
UNPARSABLE = [
    ("deep", '{"a":' * 932 + "1" + "}" * 932, "nested deeper than 32 levels"),
    ("digits", "9" * 5000, "digits"),
]


@pytest.mark.parametrize(("what", "text", "needle"), UNPARSABLE, ids=[u[0] for u in UNPARSABLE])
def test_the_admin_refuses_json_it_cannot_parse_on_every_json_input(
    client: Client, admin_client: Client, what: str, text: str, needle: str
) -> None:
    add = {"task_type": "t", "task_status": "pending", "task_data": "{}", "task_status_data": "{}"}
    resp = admin_client.post("/admin/tasks_app/globaltask/add/", {**add, "task_data": text})
    assert resp.status_code == 200 and needle in resp.content.decode(), resp.content[-3000:]
    task_id = tracked(client)
    resp = admin_client.post(f"/admin/tasks_app/globaltask/{task_id}/change/", {**add, "task_status_data": text})
    assert resp.status_code == 200 and needle in resp.content.decode()
    # The typed add form's JSON inputs (tasks_app/admin_type_forms.py) too.
    typed = {"task_data__cluster": "demo", "task_data__name": "v1", "task_data__storage_units": text, "_save": "Save"}
    resp = admin_client.post("/admin/tasks_app/globaltask/add/?task_type=volume_create", typed)
    assert resp.status_code == 200 and needle in resp.content.decode()
    assert list(GlobalTask.objects.values_list("task_id", "task_data", "task_status_data")) == [(task_id, {}, {})]
    # And the node form's labels and capacity (the same field).
    node = {"name": "n9", "state": "member", "transport": "queue", "labels": text, "capacity": text}
    resp = admin_client.post("/admin/tasks_app/node/add/", node)
    assert resp.status_code == 200 and resp.content.decode().count(needle) >= 2
    assert not Node.objects.filter(name="n9").exists()


def test_a_typed_json_input_with_a_lone_surrogate_is_refused_and_shown_escaped(admin_client: Client) -> None:
    typed = {"task_data__cluster": "demo", "task_data__name": "v1", "_save": "Save"}
    units = '[{"node": "\\ud800"}]'
    resp = admin_client.post(
        "/admin/tasks_app/globaltask/add/?task_type=volume_create", {**typed, "task_data__storage_units": units}
    )
    page = resp.content.decode()
    assert resp.status_code == 200 and "lone surrogate" in page
    assert "\\ud800" in page  # shown again as the escape it was typed as
    assert not GlobalTask.objects.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_the_seed_api_reads_utf_8_only(client: Client, encoding: str) -> None:
    # JSON between systems is UTF-8 (RFC 8259), and /api/v1 reads nothing else: Python's json.loads would
    # guess UTF-16 and UTF-32 from the bytes, so the seed API took bodies /api/v1 refuses.
    body = json.dumps({"task_type": "x"}).encode(encoding)
    refused(send(client, "POST", "/task", body), 400, "Malformed JSON in request body")
    task_id = tracked(client)
    update = json.dumps({"task_id": task_id, "status": "completed"}).encode(encoding)
    refused(send(client, "POST", "/task_update", update), 400, "Malformed JSON in request body")
    assert GlobalTask.objects.get(pk=task_id).task_status == "pending"
    assert GlobalTask.objects.count() == 1


# --- 9. task_type ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", [" volume_create", "volume_create ", "noop\u00a0", "   "])
def test_a_task_type_with_a_space_at_either_end_is_refused(client: Client, api_client: Client, task_type: str) -> None:
    # Stored as sent, "volume_create " would be a record of a type no node runs, not the work asked for.
    refused(send(client, "POST", "/task", {"task_type": task_type}), 400, "must not begin or end with a space")
    v1 = send(api_client, "POST", "/api/v1/tasks/", {"task_type": task_type, "task_data": {}})
    assert v1.status_code == 400 and "must not begin or end with a space" in v1.content.decode(), v1.content
    assert not GlobalTask.objects.exists()


@pytest.mark.parametrize("body", [{}, {"task_type": ""}, {"task_type": None}, {"task_type": "x" * 65}])
def test_task_type_is_required(client: Client, api_client: Client, body: dict[str, Any]) -> None:
    refused(send(client, "POST", "/task", body), 400, "'task_type' is required")
    v1 = send(api_client, "POST", "/api/v1/tasks/", body)
    assert v1.status_code == 400 and "task_type" in v1.json()
    assert not GlobalTask.objects.exists()


@pytest.mark.parametrize("task_id", ["t1\n", "t1\n\n", "\nt1"])
def test_an_id_with_a_newline_is_refused_not_stored(client: Client, api_client: Client, task_id: str) -> None:
    # Python's `$` matches before a final newline: the id patterns are matched whole, not by `match`.
    refused(send(client, "POST", "/task", {"task_id": task_id, "task_type": "x"}), 400, "task_id")
    v1 = send(api_client, "POST", "/api/v1/tasks/", {"task_id": task_id, "task_type": "x", "execute": False})
    assert v1.status_code == 400 and "'task_id' must be a string of 1-64" in v1.content.decode(), v1.content
    assert not GlobalTask.objects.exists()


def test_a_node_name_with_a_newline_is_refused(api_client: Client) -> None:
    body = {"task_type": "noop", "task_data": {}, "node": "node1\n"}
    resp = send(api_client, "POST", "/api/v1/tasks/", body)
    assert resp.status_code == 400, resp.content
    assert resp.json() == {"detail": "node: must be a node name of 1-64 letters, digits, '.', '_' or '-'"}
    assert not GlobalTask.objects.exists()


# --- the second read's findings ------------------------------------------------------------------------


def test_a_node_report_with_text_no_database_keeps_is_escaped_not_lost(
    api_client: Client, redis_stream: redis.Redis
) -> None:
    # An error naming a file whose bytes are not UTF-8 reaches Python as lone surrogates; refusing the
    # report would leave the task in_progress forever (PostgreSQL) or unreadable (SQLite).
    resp = send(api_client, "POST", "/api/v1/tasks/", {"task_type": "noop", "task_data": {"node": "node1"}})
    task_id = resp.json()["task_id"]
    run = GlobalTask.objects.get(pk=task_id).run_id
    error = {"error": {"message": "cannot open /data/\udcff\udcfe", "nested": nested(40), "nul": "a\x00b"}}
    stream.push(StatusUpdate(task_id, "failed", error, source="node:node1", run_id=run, origin=Origin.NODE))
    run_once()
    task = GlobalTask.objects.get(pk=task_id)
    assert task.task_status == "failed"
    assert task.task_status_data["error"]["message"] == "cannot open /data/\\udcff\\udcfe"
    assert task.task_status_data["error"]["nul"] == "a\\x00b"
    assert isinstance(json.dumps(task.task_status_data).encode(), bytes)
    shown = api_client.get(f"/api/v1/tasks/{task_id}/")
    assert shown.status_code == 200 and shown.json()["task_status"] == "failed"


def test_a_late_report_on_an_old_run_is_ignored_not_an_error(client: Client, redis_stream: redis.Redis) -> None:
    # A pull agent's report about a run that was retried since: true when it was made, so not a 4xx
    # (its raise_for_status would stop the agent), and never applied to the new run.
    node = node_register(cluster=Cluster.objects.get(name="demo"), name="puller", transport="pull")
    user = get_user_model().objects.create_user("node:puller")
    node.user = user
    node.save(update_fields=["user"])
    key = Token.objects.create(user=user).key
    task, _ = services.task_create(task_type="noop", task_data={"node": "puller"}, execute=True)
    body = {"task_id": task.task_id, "status": "completed", "run_id": "an-old-run"}
    resp = send(client, "POST", "/task_update", body, HTTP_AUTHORIZATION=f"Token {key}")
    assert resp.status_code == 200
    assert resp.json() == {"success": True, "message": "Ignored: run 'an-old-run' is not the task's current run"}
    run_once()
    assert GlobalTask.objects.get(pk=task.task_id).task_status == "pending"


def test_an_origin_in_csrf_trusted_origins_counts_as_own(client: Client, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.ops.example"]
    resp = send(client, "POST", "/task", {"task_type": "t"}, HTTP_ORIGIN="https://console.ops.example")
    assert resp.status_code == 200 and resp.json()["data"]["message"] == "Task created"
    other = send(client, "POST", "/task", {"task_type": "t"}, HTTP_ORIGIN="https://ops.example.evil")
    refused(other, 403, "nor in CSRF_TRUSTED_ORIGINS")


def test_a_refused_admin_change_does_not_say_it_was_saved(client: Client, admin_client: Client) -> None:
    task_id = tracked(client, task_status="completed", task_status_data={"r": 1})
    url = f"/admin/tasks_app/globaltask/{task_id}/change/"
    form = {"task_type": "backup", "task_status": "completed", "task_data": "{}", "task_status_data": '{"r": 2}'}
    form |= {"history-TOTAL_FORMS": "0", "history-INITIAL_FORMS": "0"}  # the history inline's management form
    resp = admin_client.post(url, form, follow=True)
    page = resp.content.decode()
    assert "is settled" in page and "was changed successfully" not in page
    assert GlobalTask.objects.get(pk=task_id).task_status_data == {"r": 1}
