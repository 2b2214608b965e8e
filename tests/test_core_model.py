"""The core model, on the real database and Redis: tracked and executed tasks, one identity per run,
honest cancel, registered nodes. The same rules hold end to end in test_e2e_nodes.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.db.models import F
from django.test import Client

from taskhub.celery import app as celery_app
from tasks_app.errors import InvalidInput, TaskConflict
from tasks_app.fleet.health import sweep_dead_nodes
from tasks_app.fleet.models import BlockAllocation, Cluster, Node, StorageUnit, Vdag, Volume
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.tasks import dispatch
from tasks_app.tasks.models import GlobalTask
from tasks_app.tasks.services import task_cancel, task_create, task_delete, task_retry, task_update
from tests.helpers import node_report, unpublished
from workers.protocol import run_end
from workers.protocol.queues import node_queue
from workers.protocol.status import Verdict

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def demo(redis_stream: redis.Redis) -> Iterator[Cluster]:
    cluster = cluster_ensure(name="demo")
    for name in ("node1", "node2"):
        node_register(cluster=cluster, name=name)
    Node.objects.update(last_heartbeat=datetime.now(UTC))
    yield cluster
    with celery_app.connection_for_write() as conn:  # what a test published, for nodes that never run here
        conn.default_channel.client.delete(*(node_queue(n) for n in ("node1", "node2", "node3")))  # type: ignore[attr-defined]


def send(client: Client, method: str, path: str, body: Any) -> Any:
    return getattr(client, method)(path, data=json.dumps(body), content_type="application/json")


def alloc(blocks: int = 1, **kw: Any) -> GlobalTask:
    data = {"cluster": "demo", "node": "node1", "blocks": blocks}
    return task_create(task_type="block_alloc", task_data=data, execute=True, **kw)[0]


# --- creation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["received", "in_progress", "completed", "failed", "cancelled"])
def test_an_executed_task_cannot_be_created_running_or_finished(client: Client, status: str) -> None:
    body = {"task_type": "noop", "task_data": {"node": "node1"}, "task_status": status, "execute": True}
    resp = send(client, "post", "/task", body)
    assert resp.status_code == 400
    assert f"an executed task starts 'pending' (its node reports the rest), not {status!r}" in resp.json()["message"]
    assert not GlobalTask.objects.exists()


def test_the_orchestrator_api_runs_executable_types_and_keeps_the_rest_as_records(api_client: Client) -> None:
    ran = send(api_client, "post", "/api/v1/tasks/", {"task_type": "noop", "task_data": {"node": "node2"}}).json()
    assert (ran["executed"], ran["node"], ran["task_status"]) == (True, "node2", "pending") and ran["run_id"]
    kept = send(api_client, "post", "/api/v1/tasks/", {"task_type": "invoice", "task_data": {"n": 1}}).json()
    assert (kept["executed"], kept["node"], kept["run_id"]) == (False, "", "")
    record = send(api_client, "post", "/api/v1/tasks/", {"task_type": "noop", "task_data": {"x": 1}, "execute": False})
    assert record.status_code == 201 and record.json()["task_data"] == {"x": 1}  # not validated: not run
    running = {"task_type": "noop", "task_data": {"node": "node1"}, "task_status": "completed"}
    refused = send(api_client, "post", "/api/v1/tasks/", running)
    assert refused.status_code == 400 and "starts 'pending'" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("task_type", "task_data", "node", "needle"),
    [
        ("noop", {"node": "ghost"}, None, "task_data: node 'ghost' is not registered"),
        ("block_alloc", {"cluster": "demo", "node": "node1", "blocks": 1}, "ghost", "node: 'ghost' does not take part"),
        ("cluster_infra_creation", {"cluster": "c2", "nodes": ["node1", "ghost"]}, None,
         "node 'ghost' is not registered"),
        ("volume_create", {"cluster": "demo", "name": "v", "storage_units": [{"node": "node1"}, {"node": "ghost"}]},
         None, "storage_units[1].node: no node named 'ghost'"),
    ],
)  # fmt: skip
def test_an_executed_task_for_a_node_nobody_registered_is_refused(
    task_type: str, task_data: dict[str, Any], node: str | None, needle: str
) -> None:
    with pytest.raises(InvalidInput, match=needle.replace("[", r"\[").replace("]", r"\]")):
        task_create(task_type=task_type, task_data=task_data, execute=True, node=node)
    assert not GlobalTask.objects.exists()


# --- forging a completion ------------------------------------------------------------------------------


def test_a_tracked_task_renamed_to_an_executable_type_stays_a_record(client: Client) -> None:
    """The forgery from the issue: rename a record node_addition, then PUT it completed."""
    task_id = send(client, "post", "/task", {"task_type": "note"}).json()["data"]["task_id"]
    evil = {"task_type": "node_addition", "task_data": {"cluster": "demo", "node": "evil..node/../x"}}
    assert send(client, "put", f"/task/{task_id}", evil).status_code == 200
    assert send(client, "put", f"/task/{task_id}", {"task_status": "completed"}).status_code == 200
    task = GlobalTask.objects.get(pk=task_id)
    assert (task.task_type, task.task_status, task.node, task.run_id) == ("node_addition", "completed", "", "")
    assert not Node.objects.filter(name="evil..node/../x").exists()
    assert set(Node.objects.values_list("name", flat=True)) == {"node1", "node2"}


def test_a_client_cannot_complete_an_executed_task(client: Client) -> None:
    task = alloc(blocks=3)
    resp = send(client, "put", f"/task/{task.task_id}", {"task_status": "completed", "task_status_data": {}})
    assert resp.status_code == 409 and "comes from its node's reports" in resp.json()["message"]
    resp = send(client, "put", f"/task/{task.task_id}", {"task_status": "completed"})
    assert resp.status_code == 409 and "its status comes from its node's reports" in resp.json()["message"]
    resp = send(client, "put", f"/task/{task.task_id}", {"task_type": "noop"})
    assert resp.status_code == 409 and "cannot be changed" in resp.json()["message"]
    resp = send(client, "post", "/task_update", {"task_id": task.task_id, "status": "completed"})
    assert resp.status_code == 409 and "executed by node 'node1'" in resp.json()["message"]
    task.refresh_from_db()
    assert task.task_status == "pending" and not BlockAllocation.objects.exists()
    # A node's report on the current run completes it, and only that writes the record.
    assert node_report(task.task_id, "completed", {"allocation_id": task.task_id}).verdict is Verdict.APPLY
    assert BlockAllocation.objects.get().blocks == 3


def test_a_client_may_fail_an_executed_task_and_its_run_is_ended(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    task = unpublished(alloc())
    with django_capture_on_commit_callbacks(execute=True):
        resp = send(client, "put", f"/task/{task.task_id}", {"task_status": "failed", "task_status_data": {"why": "x"}})
    assert resp.status_code == 200
    assert GlobalTask.objects.get(pk=task.task_id).task_status == "failed"
    assert run_end.end_of(task.run_id) is run_end.End.VOID


# --- one identity per run -------------------------------------------------------------------------------


def test_a_report_from_another_run_is_ignored() -> None:
    task = alloc()
    outcome = node_report(task.task_id, "completed", {"allocation_id": task.task_id}, run_id="an-old-run")
    assert outcome.verdict is Verdict.STALE and "not the current run" in outcome.reason
    task.refresh_from_db()
    assert task.task_status == "pending" and task.history.count() == 1
    assert not BlockAllocation.objects.exists()


def test_re_creating_a_deleted_task_id_starts_a_new_run_that_old_reports_never_reach(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first = alloc(task_id="reused-1")
    node_report(first.task_id, "in_progress")
    with django_capture_on_commit_callbacks(execute=True):
        task_delete(task_id="reused-1")
    assert run_end.end_of(first.run_id) is run_end.End.VOID  # the old run must stop, and say nothing more
    again = alloc(task_id="reused-1", blocks=2)
    assert again.run_id != first.run_id
    assert run_end.end_of(again.run_id) is None  # nothing stale blocks the new run
    late = node_report("reused-1", "completed", {"allocation_id": "reused-1"}, run_id=first.run_id)
    assert late.verdict is Verdict.STALE
    again.refresh_from_db()
    assert again.task_status == "pending"
    assert list(again.history.values_list("to_status", "run_id")) == [("pending", again.run_id)]
    assert not BlockAllocation.objects.exists()
    node_report("reused-1", "completed", {"allocation_id": "reused-1"})
    assert BlockAllocation.objects.get().blocks == 2


def test_an_allocation_id_that_still_holds_blocks_cannot_be_reused() -> None:
    held = alloc(task_id="blk-1", blocks=5)
    node_report(held.task_id, "completed", {"allocation_id": held.task_id})
    task_delete(task_id="blk-1")  # the record stays: the blocks are still allocated on node1
    with pytest.raises(InvalidInput, match="names a block allocation that still holds 5 block"):
        alloc(task_id="blk-1", blocks=7)


# --- honest cancel ----------------------------------------------------------------------------------------


def test_cancelling_a_task_a_node_may_run_waits_for_the_node(django_capture_on_commit_callbacks: Any) -> None:
    units = [{"node": "node1"}, {"node": "node2"}]
    create, _ = task_create(
        task_type="volume_create", execute=True, task_data={"cluster": "demo", "name": "v1", "storage_units": units}
    )
    node_report(create.task_id, "completed", {"storage_units": [{"node": u["node"], "path": f"/d/{i}", "index": i}
                                                               for i, u in enumerate(units)]})  # fmt: skip
    start, _ = task_create(task_type="volume_start", execute=True, task_data={"cluster": "demo", "name": "v1"})
    # Accepted while the start runs (the volume is still "created"), and ordered after it.
    delete, _ = task_create(task_type="volume_delete", execute=True, task_data={"cluster": "demo", "name": "v1"})
    node_report(start.task_id, "in_progress")
    with django_capture_on_commit_callbacks(execute=True):
        cancelling = task_cancel(task_id=start.task_id, source="op")
    assert cancelling.task_status == "cancelling"
    assert cancelling.task_status_data["cancel"]["by"] == "op"
    assert run_end.end_of(start.run_id) is run_end.End.CANCEL
    assert task_cancel(task_id=start.task_id).task_status == "cancelling"  # asking again changes nothing
    # The next task of the volume waits while the start is not final.
    assert dispatch.publish(delete.task_id) is False
    # A late progress report from the node does not move it back.
    assert node_report(start.task_id, "in_progress", {"progress": 50}).verdict is Verdict.REJECT
    with django_capture_on_commit_callbacks(execute=True) as released:
        node_report(start.task_id, "cancelled", {"cancelled": {"stopped": "during the fan-out"}})
    start.refresh_from_db()
    assert start.task_status == "cancelled"
    assert start.task_status_data["cancel"]["outcome"] == "stopped on its node"
    assert Volume.objects.get(name="v1").state == "created"  # no completion hook ran
    assert released, "the cancel's end releases the next task of the volume"
    assert GlobalTask.objects.get(pk=delete.task_id).dispatched_at is not None


def test_a_run_that_finishes_before_it_stops_ends_as_it_finished() -> None:
    task = alloc(blocks=2)
    node_report(task.task_id, "in_progress")
    assert task_cancel(task_id=task.task_id).task_status == "cancelling"
    node_report(task.task_id, "completed", {"allocation_id": task.task_id})
    task.refresh_from_db()
    assert task.task_status == "completed"
    assert task.task_status_data["cancel"]["outcome"] == "too late: the run had finished first"
    assert BlockAllocation.objects.get().blocks == 2  # what it did is recorded: it did it


def test_a_task_no_node_can_have_yet_is_cancelled_at_once_and_may_be_retried() -> None:
    task = unpublished(alloc())
    assert task.dispatched_at is None
    assert task_cancel(task_id=task.task_id).task_status == "cancelled"
    again = task_retry(task_id=task.task_id)
    assert (again.task_status, again.attempts) == ("pending", 1) and again.run_id != task.run_id
    record, _ = task_create(task_type="note")
    assert task_cancel(task_id=record.task_id).task_status == "cancelled"  # a tracked task: nothing to wait for
    with pytest.raises(TaskConflict, match="tracked task"):
        task_retry(task_id=record.task_id)


def test_cancelling_is_never_written_by_a_client(client: Client) -> None:
    record = send(client, "post", "/task", {"task_type": "note"}).json()["data"]["task_id"]
    resp = send(client, "put", f"/task/{record}", {"task_status": "cancelling"})
    assert resp.status_code == 400 and "'cancelling' is set by a cancel" in resp.json()["message"]
    with pytest.raises(TaskConflict, match="'cancelling' is set by a cancel"):
        task_update(task_id=record, changes={"task_status": "cancelling"})


# --- nodes ---------------------------------------------------------------------------------------------------


def test_a_node_that_never_sent_a_heartbeat_counts_offline_after_its_grace(settings: Any) -> None:
    settings.TASKHUB_NODE_OFFLINE_SECONDS = 20
    long_ago = datetime.now(UTC) - timedelta(seconds=60)
    quiet = node_register(cluster=Cluster.objects.get(name="demo"), name="quiet")
    Node.objects.filter(pk=quiet.pk).update(registered_at=long_ago)
    fresh = node_register(cluster=Cluster.objects.get(name="demo"), name="fresh")  # still in its grace period
    waiting, _ = task_create(task_type="noop", task_data={"node": "quiet"}, execute=True)
    young, _ = task_create(task_type="noop", task_data={"node": "fresh"}, execute=True)
    assert sweep_dead_nodes() == 1
    assert Node.objects.get(pk=quiet.pk).offline_since is not None
    assert Node.objects.get(pk=fresh.pk).offline_since is None
    waiting.refresh_from_db()
    assert waiting.task_status == "failed"
    assert (
        "node quiet went offline: it has sent none since it was registered"
        in (waiting.task_status_data["error"]["message"])
    )
    assert GlobalTask.objects.get(pk=young.task_id).task_status == "pending"


def test_a_dead_node_ends_what_it_was_cancelling(settings: Any) -> None:
    settings.TASKHUB_NODE_OFFLINE_SECONDS = 20
    task = alloc()
    node_report(task.task_id, "in_progress")
    task_cancel(task_id=task.task_id)
    Node.objects.filter(name="node1").update(last_heartbeat=datetime.now(UTC) - timedelta(seconds=60))
    assert sweep_dead_nodes() == 1
    task.refresh_from_db()
    assert task.task_status == "cancelled"
    assert task.task_status_data["cancelled"]["stopped"] == "its node went offline"


def test_freeing_blocks_lets_a_node_leave(api_client: Client) -> None:
    node3 = node_register(cluster=Cluster.objects.get(name="demo"), name="node3")
    held, _ = task_create(
        task_type="block_alloc", task_data={"cluster": "demo", "node": "node3", "blocks": 4}, execute=True
    )
    node_report(held.task_id, "completed", {"allocation_id": held.task_id})
    leave = {"cluster": "demo", "node": "node3"}
    with pytest.raises(InvalidInput, match=f"still holds block allocation\\(s\\) \\({held.task_id}\\)"):
        task_create(task_type="node_removal", task_data=leave, execute=True)
    free, _ = task_create(
        task_type="block_free", task_data={"cluster": "demo", "node": "node3", "allocation": held.task_id}, execute=True
    )
    assert free.order_key == f"block:{held.task_id}"
    with pytest.raises(InvalidInput, match="already being freed"):
        task_create(
            task_type="block_free",
            task_data={"cluster": "demo", "node": "node3", "allocation": held.task_id},
            execute=True,
        )
    node_report(free.task_id, "completed", {"allocation_id": held.task_id, "freed": 4})
    assert not BlockAllocation.objects.exists()
    removal, _ = task_create(task_type="node_removal", task_data=leave, execute=True)
    node_report(removal.task_id, "completed", {"node": "node3", "left": "demo"})
    assert Node.objects.get(pk=node3.pk).state == "removed"


def test_deleting_a_vdag_frees_its_allocations_and_the_server_knows_its_node() -> None:
    held = alloc(blocks=2)
    node_report(held.task_id, "completed", {"allocation_id": held.task_id})
    graph = {"cluster": "demo", "node": "node1", "name": "g1", "vertices": [{"id": "a", "allocation": held.task_id}]}
    made, _ = task_create(task_type="vdag_creation", task_data=graph, execute=True)
    node_report(made.task_id, "completed", {"vdag": "g1"})
    free = {"cluster": "demo", "node": "node1", "allocation": held.task_id}
    with pytest.raises(InvalidInput, match="backs vDAG\\(s\\) g1; delete them first"):
        task_create(task_type="block_free", task_data=free, execute=True)
    gone, _ = task_create(task_type="vdag_deletion", task_data={"cluster": "demo", "name": "g1"}, execute=True)
    assert (gone.node, gone.task_data["node"], gone.order_key) == ("node1", "node1", "vdag:demo:g1")
    elsewhere = {"cluster": "demo", "name": "g1", "node": "node2"}
    with pytest.raises(InvalidInput, match=r"task_data\.node: vDAG 'g1' is on node 'node1'"):
        task_create(task_type="vdag_deletion", task_data=elsewhere, execute=True)
    node_report(gone.task_id, "completed", {"vdag": "g1", "removed": True})
    assert not Vdag.objects.exists()
    freed, _ = task_create(task_type="block_free", task_data=free, execute=True)
    node_report(freed.task_id, "completed", {"allocation_id": held.task_id, "freed": 2})
    assert not BlockAllocation.objects.exists()


# --- what the review found: no cancel waits forever, one task of a key at a time --------------------


def queued(node: str) -> int:
    with celery_app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(node_queue(node)))  # type: ignore[attr-defined]


def drop_queue(node: str) -> None:
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.delete(node_queue(node))  # type: ignore[attr-defined]


def test_a_cancelled_run_whose_message_was_lost_is_sent_again_for_its_node_to_confirm(settings: Any) -> None:
    settings.TASKHUB_REDISPATCH_SECONDS = 120
    task, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    assert dispatch.publish(task.task_id) and queued("node1") == 1
    assert task_cancel(task_id=task.task_id).task_status == "cancelling"  # published: a node may have it
    drop_queue("node1")  # the message is lost (a broker restart without persistence, say)
    assert dispatch.sweep() == 0  # too soon to call it lost
    GlobalTask.objects.filter(pk=task.task_id).update(dispatched_at=F("dispatched_at") - 121)
    assert dispatch.sweep() == 1 and queued("node1") == 1  # the same run, for its node to refuse and confirm
    assert dispatch.sweep() == 0  # not again while it waits in the queue, or until the next window
    drop_queue("node1")
    # Once a node has reported on the run, it is that node's to confirm: nothing is sent again.
    running, _ = task_create(task_type="noop", task_data={"node": "node2"}, execute=True)
    assert dispatch.publish(running.task_id)
    node_report(running.task_id, "in_progress")
    task_cancel(task_id=running.task_id)
    drop_queue("node2")
    GlobalTask.objects.filter(pk=running.task_id).update(dispatched_at=F("dispatched_at") - 121)
    assert dispatch.sweep() == 0 and queued("node2") == 0


def test_a_cancel_for_a_task_whose_node_is_offline_ends_at_once() -> None:
    task = alloc()
    node_report(task.task_id, "in_progress")
    Node.objects.filter(name="node1").update(offline_since=datetime.now(UTC))
    assert task_cancel(task_id=task.task_id).task_status == "cancelled"


def test_a_client_may_not_fail_a_task_a_node_may_be_running(client: Client) -> None:
    task = alloc()
    node_report(task.task_id, "in_progress")
    resp = send(client, "put", f"/task/{task.task_id}", {"task_status": "failed"})
    assert resp.status_code == 409 and "may be running on node 'node1': cancel it" in resp.json()["message"]
    assert GlobalTask.objects.get(pk=task.task_id).task_status == "in_progress"


def volume_on(demo: Cluster, name: str, nodes: tuple[str, ...] = ("node1", "node2")) -> Volume:
    vol = Volume.objects.create(name=name, cluster=demo, type="replicate", state="created")
    for i, node in enumerate(nodes):
        StorageUnit.objects.create(volume=vol, node=Node.objects.get(name=node), path=f"/d/{name}/{i}", index=i)
    return vol


def test_one_task_of_an_ordering_key_at_a_time_even_after_a_retry(demo: Cluster) -> None:
    volume_on(demo, "v2")
    start, _ = task_create(task_type="volume_start", execute=True, task_data={"cluster": "demo", "name": "v2"})
    delete, _ = task_create(task_type="volume_delete", execute=True, task_data={"cluster": "demo", "name": "v2"})
    assert dispatch.publish(delete.task_id) is False  # the start is before it
    node_report(start.task_id, "failed", {"error": {"message": "node2 down"}})
    assert dispatch.publish(delete.task_id) is True  # released
    node_report(delete.task_id, "in_progress")
    retried = task_retry(task_id=start.task_id)
    assert dispatch.publish(retried.task_id) is False  # the delete is running: the start waits its turn
    node_report(delete.task_id, "failed", {"error": {"message": "x"}})
    assert dispatch.publish(retried.task_id) is True


def test_deleting_a_task_releases_the_next_of_its_key(demo: Cluster, django_capture_on_commit_callbacks: Any) -> None:
    volume_on(demo, "v3")
    start, _ = task_create(task_type="volume_start", execute=True, task_data={"cluster": "demo", "name": "v3"})
    delete, _ = task_create(task_type="volume_delete", execute=True, task_data={"cluster": "demo", "name": "v3"})
    with django_capture_on_commit_callbacks(execute=True):
        task_delete(task_id=start.task_id)
    assert GlobalTask.objects.get(pk=delete.task_id).dispatched_at is not None


def test_a_joining_node_that_never_starts_goes_offline_and_its_task_fails(settings: Any, demo: Cluster) -> None:
    settings.TASKHUB_NODE_OFFLINE_SECONDS = 20
    node_register(cluster=demo, name="newbie", state=Node.State.JOINING)
    Node.objects.filter(name="newbie").update(registered_at=datetime.now(UTC) - timedelta(seconds=60))
    join, _ = task_create(task_type="node_addition", task_data={"cluster": "demo", "node": "newbie"}, execute=True)
    assert sweep_dead_nodes() == 1
    join.refresh_from_db()
    assert join.task_status == "failed" and join.task_status_data["error"]["type"] == "NodeOffline"


def test_a_create_publishes_its_run_after_commit_from_the_row_it_inserted(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The create path: one insert (which records dispatched_at) and one publish after the commit. A
    publish that fails clears dispatched_at, so the sweep publishes the task after the grace period."""
    from tasks_app.ops.breaker import redis_breaker, server_of

    with django_capture_on_commit_callbacks(execute=True):
        task, _ = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)
    assert queued("node1") == 1
    stored = GlobalTask.objects.get(pk=task.task_id)
    assert stored.dispatched_at == stored.task_create_timestamp
    # The broker failed moments ago (the breaker is open): the publish is not tried, and the task waits
    # for the sweep, as one whose create could not publish.
    broker = server_of(str(celery_app.conf.broker_url))
    redis_breaker.failed(broker)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            later, _ = task_create(task_type="noop", task_data={"node": "node2"}, execute=True)
    finally:
        redis_breaker.succeeded(broker)
    assert queued("node2") == 0 and GlobalTask.objects.get(pk=later.task_id).dispatched_at is None
    settings.TASKHUB_DISPATCH_GRACE_SECONDS = 0
    assert dispatch.sweep() == 1 and queued("node2") == 1
    assert GlobalTask.objects.get(pk=later.task_id).dispatched_at is not None
