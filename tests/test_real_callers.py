"""The reference service's real callers, replayed against the seed API as they call it: they create a
task for work they do themselves, drive it from their own thread, and report through /task_update.
taskhub stores such a task exactly as sent, never hands it to a node, and applies their reports
through the same status rules as everything else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.test import Client

from taskhub.celery import app as celery_app
from tasks_app.fleet.models import BlockAllocation, Cluster, Node
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask
from tasks_app.tasks.writer import run_once
from workers.protocol.queues import node_queue

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def demo(redis_stream: redis.Redis) -> Cluster:
    """A cluster whose nodes could run cluster_infra_creation and block_alloc, were they asked to."""
    cluster = cluster_ensure(name="demo")
    for name in ("node1", "node2"):
        node_register(cluster=cluster, name=name)
    return cluster


def post(client: Client, path: str, body: Any) -> Any:
    resp = client.post(path, data=json.dumps(body), content_type="application/json")
    return resp


def create(client: Client, body: dict[str, Any]) -> str:
    """POST /task as the callers do: they read data.task_id and call raise_for_status()."""
    resp = post(client, "/task", body)
    assert resp.status_code == 200, resp.content
    assert resp.json()["data"]["message"] == "Task created"
    return str(resp.json()["data"]["task_id"])


def report(client: Client, task_id: str, status: str, data: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {"task_id": task_id, "status": status}
    if data is not None:
        body["task_status_data"] = data
    resp = post(client, "/task_update", body)
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True, "message": "Task update pushed successfully"}


def get(client: Client, task_id: str) -> dict[str, Any]:
    resp = client.get(f"/task/{task_id}")
    assert resp.status_code == 200
    data: dict[str, Any] = resp.json()["data"]
    assert set(data) == set(SEED_FIELDS)
    return data


def queued_on_nodes() -> int:
    with celery_app.connection_for_write() as conn:
        broker = conn.default_channel.client  # type: ignore[attr-defined]
        return sum(int(broker.llen(node_queue(n))) for n in ("node1", "node2"))


def test_cluster_controller_gateway_creates_and_completes_cluster_infra(client: Client) -> None:
    """cluster_infra_creation with {"cluster_id": ...}: not our payload, not our work."""
    task_id = create(client, {"task_type": "cluster_infra_creation", "task_data": {"cluster_id": "c-7f3a"}})
    task = GlobalTask.objects.get(pk=task_id)
    assert task.task_data == {"cluster_id": "c-7f3a"}  # exactly as sent: nothing added, nothing checked
    assert (task.node, task.run_id, task.dispatched_at) == ("", "", None)
    assert queued_on_nodes() == 0
    report(client, task_id, "in_progress", {"step": "provisioning"})
    report(client, task_id, "completed", {"cluster_id": "c-7f3a", "endpoint": "10.0.0.7:6443"})
    assert run_once() == 2
    seen = get(client, task_id)
    assert seen["task_status"] == "completed"
    assert seen["task_status_data"] == {"cluster_id": "c-7f3a", "endpoint": "10.0.0.7:6443"}
    assert seen["task_data"] == {"cluster_id": "c-7f3a"}
    # Its caller's result, not a node's: no completion hook wrote a cluster record.
    assert not Cluster.objects.filter(name="c-7f3a").exists()
    history = list(task.history.order_by("at", "id").values_list("to_status", "source"))
    assert [s for s, _ in history] == ["pending", "in_progress", "completed"]
    assert all(source.startswith(("POST /task ", "POST /task_update ")) for _, source in history)


def test_a_failed_report_keeps_the_callers_error(client: Client) -> None:
    task_id = create(client, {"task_type": "cluster_infra_creation", "task_data": {"cluster_id": "c-0"}})
    report(client, task_id, "failed", {"error": "quota exceeded in region eu-1"})
    assert run_once() == 1
    seen = get(client, task_id)
    assert (seen["task_status"], seen["task_status_data"]) == ("failed", {"error": "quota exceeded in region eu-1"})


def test_model_splits_executor_reports_complete(client: Client) -> None:
    task_id = create(client, {"task_type": "model_splits", "task_data": {"model": "llama-70b", "splits": 4}})
    report(client, task_id, "complete", {"splits": ["s0", "s1", "s2", "s3"]})
    assert run_once() == 1
    seen = get(client, task_id)
    assert seen["task_status"] == "completed"
    assert seen["task_status_data"] == {"splits": ["s0", "s1", "s2", "s3"]}
    assert list(GlobalTask.objects.get(pk=task_id).history.values_list("to_status", flat=True)) == [
        "pending",
        "completed",
    ]


@pytest.mark.parametrize(
    ("task_type", "task_data"),
    [
        ("block_allocation", {"vdag_id": "v-1", "blocks": [{"id": "b1", "gpus": 2}, {"id": "b2", "gpus": 1}]}),
        ("block_dry_run", {"vdag_id": "v-1", "candidates": ["n-a", "n-b"], "policy": {"spread": True}}),
        # Our own type's name with a payload that is not ours: still the caller's record.
        ("block_alloc", {"cluster_id": "c-1", "block_ids": ["b1"], "size_gb": 40}),
        ("node_addition", {"node_id": "n-9", "labels": {"zone": "a"}}),
    ],
)
def test_block_scheduling_keeps_its_data_exactly(client: Client, task_type: str, task_data: dict[str, Any]) -> None:
    task_id = create(
        client, {"task_type": task_type, "task_data": task_data, "task_status_data": {"queued_by": "scheduler"}}
    )
    seen = get(client, task_id)
    assert seen["task_data"] == task_data and seen["task_status_data"] == {"queued_by": "scheduler"}
    report(client, task_id, "completed", {"placed": True})
    assert run_once() == 1
    assert get(client, task_id)["task_data"] == task_data
    assert get(client, task_id)["task_status"] == "completed"
    assert queued_on_nodes() == 0
    assert not BlockAllocation.objects.exists() and not Node.objects.filter(name="n-9").exists()


def test_a_tracked_task_may_start_in_any_status_the_reference_allowed(client: Client) -> None:
    for status in ("pending", "in_progress", "completed", "failed"):
        task_id = create(client, {"task_type": "report", "task_status": status})
        task = GlobalTask.objects.get(pk=task_id)
        assert task.task_status == status
        assert list(task.history.values_list("from_status", "to_status")) == [("", status)]
    refused = post(client, "/task", {"task_type": "report", "task_status": "cancelling"})
    assert refused.status_code == 400 and "'cancelling' is set by a cancel" in refused.json()["message"]


def test_the_documented_opt_in_runs_it_on_a_node(client: Client) -> None:
    """ "execute": true asks for execution: the payload is then validated, and the task gets a node."""
    bad = post(client, "/task", {"task_type": "block_alloc", "task_data": {"cluster": "demo"}, "execute": True})
    assert bad.status_code == 400 and bad.json()["message"].startswith("task_data.node: is required")
    body = {"task_type": "block_alloc", "task_data": {"cluster": "demo", "node": "node2", "blocks": 2}, "execute": True}
    task = GlobalTask.objects.get(pk=create(client, body))
    assert (task.node, task.task_status) == ("node2", "pending") and task.run_id
    unknown = post(client, "/task", {"task_type": "vdag_report", "execute": True})
    assert unknown.status_code == 400 and "is not an executable type" in unknown.json()["message"]
