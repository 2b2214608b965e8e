"""Clusters, nodes and volumes over the API: create-time checks, routing, hooks, the pull API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import BlockAllocation, Cluster, GlobalTask, Node, StorageUnit, Volume
from tasks_app.tasks.services import task_create
from tests.helpers import node_report

pytestmark = pytest.mark.django_db

VOLUMES = "/api/v1/clusters/demo/volumes"
UNITS = [{"node": "node1"}, {"node": "node2"}, {"node": "node3"}]


@pytest.fixture
def demo() -> Cluster:
    cluster = cluster_ensure(name="demo")
    for name in ("node1", "node2", "node3"):
        node_register(cluster=cluster, name=name)
    return cluster


def post(api_client: Client, url: str, body: Any) -> Any:
    return api_client.post(url, body, content_type="application/json")


def test_volume_create_answers_202_with_a_task_routed_to_the_first_unit(api_client: Client, demo: Cluster) -> None:
    resp = post(api_client, VOLUMES, {"name": "vol1", "type": "replicate", "storage_units": UNITS})
    assert resp.status_code == 202, resp.content
    task = resp.json()
    assert task["task_type"] == "volume_create" and task["task_status"] == "pending"
    assert task["node"] == "node1"
    assert task["task_data"]["cluster"] == "demo"
    explicit = post(api_client, VOLUMES, {"name": "vol2", "storage_units": UNITS, "node": "node3"})
    assert explicit.json()["node"] == "node3"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"name": "v", "storage_units": [{"node": "node1"}, {"node": "ghost"}]},
            "storage_units[1].node: no node named",
        ),
        ({"name": "v", "storage_units": [{"node": "node1"}]}, "needs 2 to 3 storage units"),
        ({"name": "v", "type": "mirror", "storage_units": UNITS}, "task_data.type"),
    ],
)
def test_volume_create_rejects_bad_requests(
    api_client: Client, demo: Cluster, body: dict[str, Any], needle: str
) -> None:
    resp = post(api_client, VOLUMES, body)
    assert resp.status_code == 400
    assert needle in str(resp.json())
    assert GlobalTask.objects.count() == 0


def test_duplicate_volume_names_are_refused_even_while_in_flight(api_client: Client, demo: Cluster) -> None:
    assert post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS}).status_code == 202
    resp = post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS})
    assert resp.status_code == 400
    assert "already being created" in resp.json()["detail"]
    GlobalTask.objects.update(task_status="completed")
    Volume.objects.create(name="vol1", cluster=demo, type="replicate")
    assert "already exists" in post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS}).json()["detail"]


def test_unknown_cluster_is_404(api_client: Client) -> None:
    assert post(api_client, "/api/v1/clusters/nope/volumes", {"name": "v", "storage_units": UNITS}).status_code == 404


def test_an_unknown_executable_type_lists_the_known_ones(api_client: Client, demo: Cluster) -> None:
    resp = post(api_client, "/api/v1/tasks/", {"task_type": "volume_explode", "node": "node1"})
    assert resp.status_code == 400
    assert "volume_create" in resp.json()["detail"] and "block_alloc" in resp.json()["detail"]


def test_bad_payload_of_a_seed_type_names_the_field(api_client: Client, demo: Cluster) -> None:
    body = {"task_type": "block_alloc", "task_data": {"cluster": "demo", "node": "node1"}, "execute": True}
    resp = post(api_client, "/task", body)
    assert resp.status_code == 400
    assert "task_data.blocks" in resp.json()["message"]


def test_record_only_types_are_not_routed(api_client: Client) -> None:
    task, _ = task_create(task_type="example_task_type")
    assert task.node == ""


def complete(task_id: str, result: dict[str, Any]) -> None:
    """The task's node reports its current run completed (a writer applying that report)."""
    node_report(task_id, "completed", result)


def test_completion_hooks_write_and_remove_volume_records(api_client: Client, demo: Cluster) -> None:
    task = post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS}).json()
    units = [{"node": u["node"], "index": i, "path": f"/d/{u['node']}/vol1"} for i, u in enumerate(UNITS)]
    complete(task["task_id"], {"volume": "vol1", "storage_units": units})
    listed = api_client.get(VOLUMES).json()
    assert [v["name"] for v in listed] == ["vol1"]
    assert [u["node"] for u in listed[0]["storage_units"]] == ["node1", "node2", "node3"]
    assert api_client.get(f"{VOLUMES}/vol1/").json()["state"] == "created"

    start = post(api_client, f"{VOLUMES}/vol1/start/", {}).json()
    assert start["task_data"]["storage_units"][2]["path"] == "/d/node3/vol1"  # the node learns where units are
    complete(start["task_id"], {})
    assert Volume.objects.get().state == "started"
    tasks_before = GlobalTask.objects.count()
    refused = api_client.delete(f"{VOLUMES}/vol1/")
    assert refused.status_code == 400
    assert "volume 'vol1' is started; cannot delete it (stop it first)" in refused.json()["detail"]
    assert GlobalTask.objects.count() == tasks_before and Volume.objects.get().state == "started"
    complete(post(api_client, f"{VOLUMES}/vol1/stop/", {}).json()["task_id"], {})
    delete = api_client.delete(f"{VOLUMES}/vol1/")
    assert delete.status_code == 202
    complete(delete.json()["task_id"], {})
    assert not Volume.objects.exists() and not StorageUnit.objects.exists()


def test_a_failed_task_writes_no_record(api_client: Client, demo: Cluster) -> None:
    task = post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS}).json()
    node_report(task["task_id"], "failed", {"error": {"message": "node3 down"}})
    assert not Volume.objects.exists()


def test_a_hook_that_cannot_write_fails_the_task(api_client: Client, demo: Cluster) -> None:
    task = post(api_client, VOLUMES, {"name": "vol1", "storage_units": UNITS}).json()
    Volume.objects.create(name="vol1", cluster=demo, type="replicate")  # taken meanwhile
    complete(task["task_id"], {"storage_units": []})
    row = GlobalTask.objects.get(pk=task["task_id"])
    assert row.task_status == "failed"
    assert row.task_status_data["error"]["type"] == "CompletionHookError"


def test_node_and_block_hooks(demo: Cluster) -> None:
    alloc, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node2", "blocks": 4}, execute=True
    )
    assert alloc.node == "node2"
    complete(alloc.task_id, {"allocation_id": alloc.task_id})
    assert BlockAllocation.objects.get().blocks == 4
    node_register(cluster=demo, name="node4", state=Node.State.JOINING)  # registered, not yet a member
    add, _ = task_create(task_type="node_addition", task_data={"cluster": "demo", "node": "node4"}, execute=True)
    complete(add.task_id, {"data_dir": "/data/node4", "capacity_blocks": 64})
    node4 = Node.objects.get(name="node4")
    assert (node4.state, node4.capacity_blocks, node4.cluster.name) == ("member", 64, "demo")
    remove, _ = task_create(task_type="node_removal", task_data={"cluster": "demo", "node": "node4"}, execute=True)
    complete(remove.task_id, {})
    assert Node.objects.get(name="node4").state == "removed"


def test_clusters_and_nodes_by_id_or_name(api_client: Client, demo: Cluster) -> None:
    assert api_client.get(f"/api/v1/clusters/{demo.pk}/").json()["name"] == "demo"
    assert api_client.get("/api/v1/clusters/demo/").json()["nodes"] == ["node1", "node2", "node3"]
    node = api_client.get("/api/v1/nodes/node2/").json()
    assert node["cluster"] == "demo" and node["online"] is False
    assert api_client.get(f"/api/v1/nodes/{node['id']}/").json()["name"] == "node2"
    assert api_client.get("/api/v1/nodes/nope/").status_code == 404
    created = post(api_client, "/api/v1/nodes/", {"name": "edge1", "cluster": "demo", "transport": "pull"})
    assert created.status_code == 201 and created.json()["transport"] == "pull"


def test_pull_api_marks_tasks_received_and_honours_since(api_client: Client, demo: Cluster) -> None:
    first, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node1", "blocks": 1}, execute=True
    )
    other, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node2", "blocks": 1}, execute=True
    )
    GlobalTask.objects.filter(pk=first.pk).update(task_create_timestamp=1000)
    resp = api_client.get("/api/v1/tasks/demo/node1")
    assert resp.status_code == 200
    assert [t["task_id"] for t in resp.json()] == [first.task_id]
    first.refresh_from_db()
    assert first.task_status == "received"
    assert first.history.filter(to_status="received", source="pull:node1").exists()
    assert api_client.get("/api/v1/tasks/demo/node1", {"since": "2000"}).json() == []
    assert api_client.get("/api/v1/tasks/demo/node1", {"since": "soon"}).status_code == 400
    assert api_client.get("/api/v1/tasks/other/node1").status_code == 404
    other.refresh_from_db()
    assert other.task_status == "pending"


def test_pull_api_keeps_dependent_tasks_in_order(api_client: Client, demo: Cluster) -> None:
    first, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node3", "blocks": 1}, execute=True
    )
    second, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node3", "blocks": 1}, execute=True
    )
    GlobalTask.objects.filter(pk__in=[first.pk, second.pk]).update(order_key="volume:demo:v9")
    assert [t["task_id"] for t in api_client.get("/api/v1/tasks/demo/node3").json()] == [first.task_id]
    complete(first.task_id, {})
    assert [t["task_id"] for t in api_client.get("/api/v1/tasks/demo/node3").json()] == [second.task_id]
