"""Replay with edited input: a failed or cancelled executed task cloned into a new task (services.task_replay),
over the service, the API, the CLI and the admin."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from pytest_django.live_server_helper import LiveServer
from typer.testing import CliRunner

from cli.main import app
from tasks_app.errors import TaskConflict
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node
from tasks_app.tasks.services import task_cancel, task_create, task_replay
from tests.helpers import node_report, unpublished

RUN = uuid.uuid4().hex[:6]
A, B = f"rp{RUN}-a", f"rp{RUN}-b"


@pytest.fixture
def demo(db: None) -> Cluster:
    cluster = cluster_ensure(name="demo")
    for name in (A, B):
        node_register(cluster=cluster, name=name)
    Node.objects.update(last_heartbeat=datetime.now(UTC))
    return cluster


def failed_volume(name: str = "v1") -> GlobalTask:
    units = [{"node": A}, {"node": B}]
    task, _ = task_create(
        task_type="volume_create", execute=True, task_data={"cluster": "demo", "name": name, "storage_units": units}
    )
    node_report(task.task_id, "failed", {"error": {"message": "disk full"}})
    task.refresh_from_db()
    assert task.task_status == "failed"
    return task


def history(task_id: str) -> list[tuple[str, str, str]]:
    task = GlobalTask.objects.get(pk=task_id)
    return list(task.history.order_by("at", "id").values_list("from_status", "to_status", "source"))


@pytest.mark.django_db
def test_replay_of_a_failed_task_with_edited_data_over_the_api(api_client: Client, demo: Cluster) -> None:
    original = failed_volume()
    before = history(original.task_id)
    edited = {**original.task_data, "name": "v2"}
    resp = api_client.post(
        f"/api/v1/tasks/{original.task_id}/replay/", {"task_data": edited}, content_type="application/json"
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    new = GlobalTask.objects.get(pk=body["task_id"])
    assert new.task_id != original.task_id and body["task_status"] == "pending" and body["executed"] is True
    assert (new.task_type, new.task_status, new.task_data["name"]) == ("volume_create", "pending", "v2")
    assert new.task_data["storage_units"] == [{"node": A}, {"node": B}] and new.node in (A, B) and new.run_id
    assert body["placement"]["replay_of"] == original.task_id == new.placement["replay_of"]
    rows = history(new.task_id)
    assert len(rows) == 1 and rows[0][:2] == ("", "pending")
    assert rows[0][2].startswith(f"replay of {original.task_id} by POST /api/v1/tasks/") and "operator" in rows[0][2]
    # The original keeps its status, its node's report and its history; it names its replay.
    original.refresh_from_db()
    assert original.task_status == "failed" and history(original.task_id) == before
    assert original.task_status_data == {"error": {"message": "disk full"}, "replayed_as": [new.task_id]}

    # The same input again (an empty body): another task, listed after the first.
    again = api_client.post(f"/api/v1/tasks/{original.task_id}/replay/", content_type="application/json")
    assert again.status_code == 201, again.content
    assert again.json()["task_data"]["name"] == "v1"
    original.refresh_from_db()
    assert original.task_status_data["replayed_as"] == [new.task_id, again.json()["task_id"]]


@pytest.mark.django_db
def test_refused_edits_name_the_field_and_create_nothing(api_client: Client, demo: Cluster) -> None:
    original = failed_volume()
    count = GlobalTask.objects.count()
    url = f"/api/v1/tasks/{original.task_id}/replay/"
    bad_name = api_client.post(
        url, {"task_data": {**original.task_data, "name": "no such/name"}}, content_type="application/json"
    )
    assert bad_name.status_code == 400 and bad_name.json()["detail"].startswith("task_data.name:"), bad_name.content
    ghost = {**original.task_data, "storage_units": [{"node": "ghost"}, {"node": A}]}
    unknown_node = api_client.post(url, {"task_data": ghost}, content_type="application/json")
    assert unknown_node.status_code == 400 and "task_data.storage_units[0].node" in unknown_node.json()["detail"]
    not_object = api_client.post(url, {"task_data": [1]}, content_type="application/json")
    assert not_object.status_code == 400 and "task_data" in not_object.json()
    typo = api_client.post(url, {"task_dat": {}}, content_type="application/json")
    assert typo.status_code == 400 and typo.json() == {"task_dat": ["Unknown field"]}
    bad_node = api_client.post(url, {"node": "no/node"}, content_type="application/json")
    assert bad_node.status_code == 400 and "node" in bad_node.json()
    assert GlobalTask.objects.count() == count
    original.refresh_from_db()
    assert "replayed_as" not in original.task_status_data


@pytest.mark.django_db
def test_only_failed_or_cancelled_executed_tasks_replay(api_client: Client, demo: Cluster) -> None:
    pending, _ = task_create(task_type="noop", task_data={"node": A}, execute=True)
    done, _ = task_create(task_type="noop", task_data={"node": A}, execute=True)
    node_report(done.task_id, "completed", {"result": {}})
    tracked, _ = task_create(task_type="noop", task_data={"node": A}, task_status="failed")
    count = GlobalTask.objects.count()
    for task, said in ((pending, "is pending"), (done, "is completed"), (tracked, "a record its caller drives")):
        resp = api_client.post(f"/api/v1/tasks/{task.task_id}/replay/", content_type="application/json")
        assert resp.status_code == 409 and said in resp.json()["detail"], resp.content
    assert api_client.post("/api/v1/tasks/nope/replay/", content_type="application/json").status_code == 404
    assert GlobalTask.objects.count() == count

    # Cancelled replays; its own id makes the request safe to repeat, and an id taken by another task is a 409.
    cancelled = task_cancel(task_id=unpublished(pending).task_id, source="test")
    assert cancelled.task_status == "cancelled"
    first = task_replay(task_id=pending.task_id, new_task_id=f"again-{RUN}", source="test")
    repeat = task_replay(task_id=pending.task_id, new_task_id=f"again-{RUN}", source="test")
    assert first.task_id == repeat.task_id == f"again-{RUN}" and first.node == A
    cancelled.refresh_from_db()
    assert cancelled.task_status == "cancelled" and cancelled.task_status_data["replayed_as"] == [f"again-{RUN}"]
    with pytest.raises(TaskConflict, match="exists"):
        task_replay(task_id=pending.task_id, new_task_id=done.task_id)


@pytest.mark.django_db
def test_admin_replay_action(client: Client, django_user_model: Any, demo: Cluster) -> None:
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw"))
    failed, _ = task_create(task_type="noop", task_data={"node": A, "x": 1}, execute=True)
    node_report(failed.task_id, "failed", {"error": {"message": "boom"}})
    pending, _ = task_create(task_type="noop", task_data={"node": A}, execute=True)
    resp = client.post(
        "/admin/tasks_app/globaltask/",
        {"action": "replay_tasks", "_selected_action": [failed.pk, pending.pk]},
        follow=True,
    )
    failed.refresh_from_db()
    (new_id,) = failed.task_status_data["replayed_as"]
    new = GlobalTask.objects.get(pk=new_id)
    assert (new.task_data, new.task_status, failed.task_status) == ({"node": A, "x": 1}, "pending", "failed")
    assert history(new_id)[0][2] == f"replay of {failed.task_id} by admin by boss"
    page = resp.content.decode()
    assert f"Task {failed.task_id} replayed as {new_id}" in page
    assert f"Task {pending.task_id}: Only a failed or cancelled task can be replayed" in page
    assert GlobalTask.objects.filter(task_type="noop").count() == 3


@pytest.mark.django_db(transaction=True)
def test_cli_replay_with_set(live_server: LiveServer, operator_token: str, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TASKHUB_TOKEN", operator_token)
    monkeypatch.delenv("TASKHUB_URL", raising=False)
    c1 = cluster_ensure(name="c1")
    for name in ("node1", "node2"):  # pull nodes: nothing is published to Celery
        node_register(cluster=c1, name=name, transport=Node.Transport.PULL)
    units = [{"node": "node1"}, {"node": "node2"}]
    original, _ = task_create(
        task_type="volume_create", execute=True, task_data={"cluster": "c1", "name": "v1", "storage_units": units}
    )
    node_report(original.task_id, "failed", {"error": {"message": "boom"}})

    def taskhub(*args: str) -> Any:
        return CliRunner().invoke(app, [*args, "--url", live_server.url], env={"COLUMNS": "200"})

    result = taskhub("task", "replay", original.task_id, "--set", "name=v7", "--json")
    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)
    assert task["task_data"] == {"cluster": "c1", "name": "v7", "type": "replicate", "storage_units": units}
    assert task["task_status"] == "pending" and task["placement"]["replay_of"] == original.task_id
    original.refresh_from_db()
    assert original.task_status == "failed" and original.task_status_data["replayed_as"] == [task["task_id"]]

    one = 'storage_units=[{"node": "node1"}]'
    shown = taskhub("task", "replay", original.task_id, "--set", one, "--set", "type=distribute")
    assert shown.exit_code == 0, shown.output
    assert f"Replayed task {original.task_id} as " in shown.stdout and "pending" in shown.stdout
    (newest,) = GlobalTask.objects.filter(task_type="volume_create", task_data__storage_units=[{"node": "node1"}])
    assert newest.task_data["name"] == "v1"

    refused = taskhub("task", "replay", original.task_id, "--set", "name=bad/name")
    assert refused.exit_code == 1 and "task_data.name" in refused.stderr
    both = taskhub("task", "replay", original.task_id, "--set", "name=x", "--data", "{}")
    assert both.exit_code == 2
    assert GlobalTask.objects.count() == 3
