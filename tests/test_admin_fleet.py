"""The admin for fleet operations (issue 11): the node list and its actions (cordon, drain, uncordon),
editing labels and capacity, deleting a node, and a task page's placement, constraints, runs and timings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tasks_app.fleet.scheduling import node_cordon, node_drain
from tasks_app.fleet.services import cluster_ensure, node_register, node_update
from tasks_app.models import Cluster, GlobalTask, Node
from tasks_app.tasks.services import task_create
from tasks_app.tasks.timings import run_timings, runs_from, total_time
from tests.helpers import node_report

pytestmark = pytest.mark.django_db

RUN = uuid.uuid4().hex[:6]
A, B, C = (f"adm{RUN}-{n}" for n in "abc")
NODES = "/admin/tasks_app/node/"


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", "", "pw-for-tests-only"))
    return client


@pytest.fixture
def demo(redis_stream: redis.Redis) -> Iterator[Cluster]:
    """Three live nodes (as tests/test_operations.py's fixture)."""
    cluster = cluster_ensure(name="demo")
    for name in (A, B, C):
        node_register(cluster=cluster, name=name)
    Node.objects.update(last_heartbeat=datetime.now(UTC))
    yield cluster
    for key in redis_stream.scan_iter(match=f"*adm{RUN}*"):
        redis_stream.delete(key)


def volume_task(node: str | None = None, name: str = "v1", **kw: Any) -> GlobalTask:
    data = {"cluster": "demo", "name": name, "storage_units": [{"node": A}, {"node": B}, {"node": C}]}
    return task_create(task_type="volume_create", execute=True, task_data=data, node=node, **kw)[0]


def node(name: str) -> Node:
    return Node.objects.get(name=name)


def act(staff: Client, action: str, *names: str) -> str:
    ids = [str(node(n).pk) for n in names]
    resp = staff.post(NODES, {"action": action, "_selected_action": ids}, follow=True)
    assert resp.status_code == 200
    return resp.content.decode()


def test_the_node_list_shows_scheduling_labels_capacity_and_load(staff: Client, demo: Cluster) -> None:
    node_update(node=node(A), labels={"disk": "ssd"}, capacity={"slots": 4})
    volume_task(A, constraints={"capacity": {"slots": 1}})
    node_cordon(node=node(B))
    node_drain(node=node(C), source="test")  # nothing on it: drained at once
    with CaptureQueriesContext(connection) as queries:
        html = staff.get(NODES).content.decode()
    # One read of the page's loads (node_loads: two queries), not one per row.
    assert sum('"global_task"' in q["sql"] or "global_task " in q["sql"] for q in queries.captured_queries) <= 2
    assert "<code>disk=ssd</code>" in html
    assert "slots&nbsp;1&nbsp;/&nbsp;4" in html
    row = {n: html[html.index(f">{n}</a>") :][:2000] for n in (A, B, C)}
    assert "schedulable" in row[A] and "cordoned" in row[B] and "drained" in row[C]
    assert 'class="field-unfinished_tasks">1<' in row[A]


def test_cordon_and_uncordon_actions_change_scheduling(staff: Client, demo: Cluster) -> None:
    page = act(staff, "cordon_nodes", A, B)
    assert {node(A).scheduling, node(B).scheduling, node(C).scheduling} == {"cordoned", "schedulable"}
    assert node(A).scheduling == node(B).scheduling == "cordoned"
    assert "Now cordoned:" in page and A in page
    act(staff, "uncordon_nodes", A)
    assert (node(A).scheduling, node(B).scheduling) == ("schedulable", "cordoned")


def test_the_drain_action_moves_a_pending_task_to_another_node(staff: Client, demo: Cluster) -> None:
    task = volume_task(A)
    assert task.node == A
    old_run = task.run_id
    page = act(staff, "drain_nodes", A)
    assert "1 pending task(s) moved, 0 stayed, 0 running" in page
    assert node(A).scheduling == "draining"
    task.refresh_from_db()
    assert task.node in (B, C) and task.task_status == "pending" and task.run_id != old_run
    move = task.history.get(from_status="pending", to_status="pending")
    assert move.run_id == task.run_id and "admin by root" in move.source and A in move.source
    assert task.placement["moves"][-1]["from"] == A and task.placement["moves"][-1]["to"] == task.node
    # Its node now has nothing unfinished: the list says drained.
    assert "drained" in staff.get(NODES).content.decode()


def test_a_task_no_other_node_may_take_stays_and_is_named(staff: Client, demo: Cluster) -> None:
    node_update(node=node(A), labels={"disk": "ssd"})
    task = volume_task(A, constraints={"labels": {"disk": "ssd"}})
    page = act(staff, "drain_nodes", A)
    assert "0 pending task(s) moved, 1 stayed" in page
    assert task.task_id in page and "no label disk" in page
    task.refresh_from_db()
    assert task.node == A


def _change_form(n: Node, **fields: str) -> dict[str, str]:
    data = {"transport": n.transport, "labels": "{}", "capacity": "{}"}
    data.update(fields)
    return data


def test_labels_and_capacity_are_edited_through_the_checks(staff: Client, demo: Cluster) -> None:
    url = f"{NODES}{node(A).pk}/change/"
    page = staff.get(url).content.decode()
    assert 'name="labels"' in page and 'name="capacity"' in page and 'name="scheduling"' not in page
    resp = staff.post(url, _change_form(node(A), labels='{"bad key!": "x"}'))
    assert resp.status_code == 200
    assert "labels: &#x27;bad key!&#x27; is not a label name" in resp.content.decode()
    resp = staff.post(url, _change_form(node(A), capacity='{"slots": -1}'))
    assert resp.status_code == 200 and "capacity.slots: must be a whole number" in resp.content.decode()
    resp = staff.post(url, _change_form(node(A), labels="[1]"))
    assert resp.status_code == 200 and "labels: must be an object" in resp.content.decode()
    assert (node(A).labels, node(A).capacity) == ({}, {})
    resp = staff.post(url, _change_form(node(A), labels='{"disk": "ssd"}', capacity='{"slots": 2}'))
    assert resp.status_code == 302, resp.content[:3000]
    assert (node(A).labels, node(A).capacity) == ({"disk": "ssd"}, {"slots": 2})


def test_add_a_node_with_labels(staff: Client, demo: Cluster) -> None:
    name = f"adm{RUN}-new"
    form = {"name": name, "cluster": str(demo.pk), "state": "member", "transport": "pull",
            "labels": '{"zone": "a"}', "capacity": "{}"}  # fmt: skip
    resp = staff.post(f"{NODES}add/", {**form, "labels": '{"zone": 1}'})
    assert resp.status_code == 200 and "labels.zone: must be a string" in resp.content.decode()
    resp = staff.post(f"{NODES}add/", form)
    assert resp.status_code == 302, resp.content[:3000]
    assert (node(name).labels, node(name).transport) == ({"zone": "a"}, "pull")


def test_delete_is_refused_while_the_node_has_unfinished_tasks(staff: Client, demo: Cluster) -> None:
    task = volume_task(A)
    url = f"{NODES}{node(A).pk}/delete/"
    for resp in (staff.get(url, follow=True), staff.post(url, {"post": "yes"}, follow=True)):
        page = resp.content.decode()
        assert f"Node &#x27;{A}&#x27; cannot be removed while it has 1 unfinished task(s)" in page
        assert f"<li>task {task.task_id} (volume_create, pending)</li>" in page
        assert Node.objects.filter(name=A).exists()
    # Not offered in bulk: that would skip the check.
    assert 'value="delete_selected"' not in staff.get(NODES).content.decode()
    resp = staff.post(f"{NODES}{node(C).pk}/delete/", {"post": "yes"}, follow=True)
    assert resp.status_code == 200 and not Node.objects.filter(name=C).exists()


def test_the_task_page_shows_placement_constraints_runs_and_timings(staff: Client, demo: Cluster) -> None:
    node_update(node=node(A), capacity={"slots": 2})
    node_update(node=node(B), capacity={"slots": 2})
    node_cordon(node=node(C))
    task = volume_task(constraints={"capacity": {"slots": 1}})
    ran_on = task.node
    node_report(task.task_id, "received")
    node_report(task.task_id, "in_progress")
    node_report(task.task_id, "completed")
    page = staff.get(f"/admin/tasks_app/globaltask/{task.task_id}/change/").content.decode()
    assert "rule: <strong>balanced</strong>" in page and f"node: <strong>{ran_on}</strong>" in page
    assert f"<td>{C}</td><td></td><td></td><td></td><td>passed over: cordoned</td>" in page
    assert f"<td>{A}</td><td>online</td><td>0</td><td>1.0</td><td>may take it</td>" in page
    assert "capacity: <code>slots: 1</code>" in page
    assert page.count('class="taskhub-run"') == 1
    assert "pending → received → in_progress → completed" in page
    assert 'class="queue-wait">0.' in page and 'class="end-to-end">0.' in page


def test_task_records_are_escaped_on_the_page(staff: Client, demo: Cluster) -> None:
    task = volume_task(A)
    hostile = "<script>alert(1)</script>"
    placement = {**task.placement, "candidates": [{"node": hostile, "passed_over": hostile}],
                 "moves": [{"from": hostile, "to": A, "at": "x", "by": hostile}]}  # fmt: skip
    GlobalTask.objects.filter(pk=task.pk).update(
        placement=placement, constraints={"labels": {hostile: hostile}}, task_type="volume_create"
    )
    page = staff.get(f"/admin/tasks_app/globaltask/{task.task_id}/change/").content.decode()
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_move_starts_a_new_run_and_the_moved_one_ends_there(demo: Cluster) -> None:
    task = volume_task(A)
    node_drain(node=node(A), source="test")
    node_report(task.task_id, "in_progress")
    node_report(task.task_id, "failed", {"error": {"message": "boom"}})
    runs = run_timings(task.task_id)
    assert [(r.began, r.outcome) for r in runs] == [("created", "moved"), ("moved", "failed")]
    assert runs[0].ended_at == runs[1].began_at and runs[0].run_time is None
    assert runs[1].received_at is None and runs[1].queue_wait == runs[1].in_progress_at - runs[1].began_at  # type: ignore[operator]
    assert total_time(runs) == runs[1].ended_at - runs[0].began_at  # type: ignore[operator]


@dataclass
class Row:
    run_id: str
    from_status: str
    to_status: str
    at: datetime
    source: str = ""


def test_run_timings_per_step() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    rows = [
        Row("r1", "", "pending", at(0), "api"),
        Row("r1", "pending", "received", at(2)),
        Row("r1", "received", "in_progress", at(2.5)),
        Row("r1", "in_progress", "failed", at(10)),
        Row("r2", "failed", "pending", at(20), "admin by root"),
        Row("r2", "pending", "in_progress", at(21)),
    ]
    first, second = runs_from(rows)
    assert (first.began, first.began_by, first.outcome) == ("created", "api", "failed")
    assert first.queue_wait == timedelta(seconds=2)
    assert first.received_to_in_progress == timedelta(seconds=0.5)
    assert first.run_time == timedelta(seconds=7.5) and first.end_to_end == timedelta(seconds=10)
    # Still running: no end yet; picked up straight into in_progress.
    assert (second.began, second.outcome, second.ended_at) == ("retried", "in_progress", None)
    assert second.queue_wait == timedelta(seconds=1) and second.received_to_in_progress is None
    assert second.run_time is None and total_time([first, second]) is None
    assert runs_from([]) == []
