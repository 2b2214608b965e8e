"""The Django admin: list, filters, search, history on the task page, status edits through the rules."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import GlobalTask
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import StatusUpdate, task_transition
from tests.helpers import node_report, unpublished

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client: Client) -> Client:
    user = User.objects.create_superuser("root", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_changelist_filters_and_search(staff: Client) -> None:
    a, _ = task_create(task_type="vdag_report")
    task_create(task_type="block_audit", task_status="failed")
    resp = staff.get("/admin/tasks_app/globaltask/", {"task_type": "vdag_report"})
    assert resp.status_code == 200
    assert a.task_id.encode() in resp.content
    resp = staff.get("/admin/tasks_app/globaltask/", {"q": a.task_id})
    assert a.task_id.encode() in resp.content
    resp = staff.get("/admin/tasks_app/globaltask/", {"task_status": "failed"})
    assert a.task_id.encode() not in resp.content


def test_change_page_shows_history_and_readonly_timestamps(staff: Client) -> None:
    task, _ = task_create(task_type="t")
    task_transition(update=StatusUpdate(task.task_id, "in_progress", source="node7"))
    resp = staff.get(f"/admin/tasks_app/globaltask/{task.task_id}/change/")
    assert resp.status_code == 200
    assert b"node7" in resp.content
    assert b'name="task_create_timestamp"' not in resp.content


def _form(task: GlobalTask, **overrides: str) -> dict[str, str]:
    data = {
        "task_type": task.task_type,
        "task_status": task.task_status,
        "task_data": "{}",
        "task_status_data": "{}",
        "history-TOTAL_FORMS": "0",
        "history-INITIAL_FORMS": "0",
        "history-MIN_NUM_FORMS": "0",
        "history-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_admin_status_edit_goes_through_the_rules(staff: Client) -> None:
    task, _ = task_create(task_type="t")
    url = f"/admin/tasks_app/globaltask/{task.task_id}/change/"
    resp = staff.post(url, _form(task, task_status="completed"))
    assert resp.status_code == 302, resp.content[:2000]
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert task.history.filter(to_status="completed", source__startswith="admin").exists()
    resp = staff.post(url, _form(task, task_status="in_progress"), follow=True)
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert b"Cannot change task_status" in resp.content


def test_cluster_node_and_volume_pages(staff: Client) -> None:
    from tasks_app.fleet.services import cluster_ensure, node_register
    from tasks_app.models import StorageUnit, Volume

    demo = cluster_ensure(name="demo")
    node = node_register(cluster=demo, name="node1")
    vol = Volume.objects.create(name="vol1", cluster=demo, type="replicate")
    StorageUnit.objects.create(volume=vol, node=node, path="/data/node1/vol1", index=0)
    assert b"node1" in staff.get("/admin/tasks_app/node/").content
    assert b"demo" in staff.get("/admin/tasks_app/cluster/").content
    page = staff.get(f"/admin/tasks_app/volume/{vol.pk}/change/")
    assert page.status_code == 200 and b"/data/node1/vol1" in page.content


def test_retry_and_cancel_actions(staff: Client) -> None:
    node_register(cluster=cluster_ensure(name="demo"), name="node1")
    failed, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    node_report(failed.task_id, "failed", {"error": {"message": "boom"}})
    running, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    node_report(running.task_id, "in_progress")
    waiting = unpublished(task_create(task_type="noop", task_data={"node": "node1"}, execute=True)[0])
    url = "/admin/tasks_app/globaltask/"
    resp = staff.post(url, {"action": "retry_tasks", "_selected_action": [failed.pk, running.pk]}, follow=True)
    assert b"1 task(s) retried" in resp.content and b"Only a failed or cancelled task can be retried" in resp.content
    failed.refresh_from_db()
    assert (failed.task_status, failed.attempts) == ("pending", 1)
    resp = staff.post(url, {"action": "cancel_tasks", "_selected_action": [running.pk, waiting.pk]}, follow=True)
    # The one never published is cancelled at once; the running one waits for its node to stop.
    assert b"1 task(s) cancelled" in resp.content and b"1 task(s) cancelling until their node stops" in resp.content
    running.refresh_from_db()
    waiting.refresh_from_db()
    assert (running.task_status, waiting.task_status) == ("cancelling", "cancelled")
    assert running.history.filter(to_status="cancelling", source__startswith="admin by").exists()
    node_report(running.task_id, "cancelled", {"cancelled": {"stopped": "at a safe point"}})
    running.refresh_from_db()
    assert running.task_status == "cancelled"


def _add_form(**fields: str) -> dict[str, str]:
    data = {"task_type": "", "task_status": "pending", "task_data": "{}", "task_status_data": "{}", "node": ""}
    data.update(fields)
    return {**_form(GlobalTask(task_type="")), **data}


def test_the_add_form_records_a_tracked_task_or_runs_one_on_a_node(staff: Client) -> None:
    node_register(cluster=cluster_ensure(name="demo"), name="node1")
    url = "/admin/tasks_app/globaltask/add/"
    page = staff.get(url)
    assert page.status_code == 200 and b'name="execute"' in page.content and b'name="node"' in page.content
    resp = staff.post(url, _add_form(task_type="block_alloc", task_data='{"anything": 1}'))
    assert resp.status_code == 302, resp.content[:2000]
    record = GlobalTask.objects.get(task_type="block_alloc")
    assert (record.task_data, record.node, record.run_id) == ({"anything": 1}, "", "")  # stored as typed
    # Asked to run: validated like any executed task, the reason shown on the form.
    resp = staff.post(url, _add_form(task_type="noop", task_data="{}", execute="on"))
    assert resp.status_code == 200 and b"task_data.node: is required" in resp.content
    resp = staff.post(url, _add_form(task_type="noop", task_data='{"node": "node1"}', task_status="completed",
                                     execute="on"))  # fmt: skip
    assert resp.status_code == 200 and b"An executed task starts pending" in resp.content
    resp = staff.post(url, _add_form(task_type="noop", task_data='{"node": "node1"}', execute="on"))
    assert resp.status_code == 302, resp.content[:2000]
    ran = GlobalTask.objects.get(task_type="noop")
    assert (ran.node, ran.task_status) == ("node1", "pending") and ran.run_id
    resp = staff.post(url, _add_form(task_type="note", node="node1"))
    assert resp.status_code == 200 and b"Only an executed task runs on a node" in resp.content
