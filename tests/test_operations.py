"""Operating tasks, on the real database: retry, cancel, assignment rules and order, dead nodes,
long poll, following new tasks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.test import Client

from tasks_app.errors import InvalidInput, TaskConflict
from tasks_app.fleet.health import sweep_dead_nodes
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node, Volume
from tasks_app.tasks import dispatch
from tasks_app.tasks.services import task_cancel, task_create, task_retry
from tests.helpers import node_report, unpublished
from workers.protocol import run_end

pytestmark = pytest.mark.django_db

RUN = uuid.uuid4().hex[:6]
A, B, C = (f"op{RUN}-{n}" for n in "abc")


@pytest.fixture
def client(api_client: Client) -> Client:
    """/api/v1 needs an account (README "Access control"): these tests call it as an operator."""
    return api_client


@pytest.fixture
def demo(redis_stream: redis.Redis) -> Iterator[Cluster]:
    """Three live nodes. Publishing and run ends use Redis: through redis_stream, every test that uses
    this fixture is marked `redis` (tests/conftest.py)."""
    cluster = cluster_ensure(name="demo")
    for name in (A, B, C):
        node_register(cluster=cluster, name=name)
    Node.objects.update(last_heartbeat=datetime.now(UTC))
    yield cluster
    for key in redis_stream.scan_iter(match=f"*op{RUN}*"):
        redis_stream.delete(key)


def alloc(on: str, **kw: Any) -> GlobalTask:
    data = {"cluster": "demo", "node": on, "blocks": 1}
    return task_create(task_type="block_alloc", task_data=data, execute=True, **kw)[0]


def vol_data(name: str, units: list[dict[str, str]]) -> dict[str, Any]:
    return {"cluster": "demo", "name": name, "storage_units": units}


def fail(task: GlobalTask, message: str = "boom") -> None:
    node_report(task.task_id, "failed", {"error": {"message": message}})


def test_retry_takes_a_failed_task_back_to_pending_as_a_new_attempt(demo: Cluster) -> None:
    task = alloc(A)
    fail(task)
    again = task_retry(task_id=task.task_id, source="op")
    assert (again.task_status, again.attempts, again.dispatched_at) == ("pending", 1, None)
    assert again.task_status_data["previous_attempt"]["error"]["message"] == "boom"
    assert list(again.history.order_by("at", "id").values_list("to_status", flat=True)) == [
        "pending", "failed", "pending"
    ]  # fmt: skip
    # A new attempt is a new run: its own id, named by the history row that started it.
    assert again.run_id and again.run_id != task.run_id
    assert list(again.history.order_by("at", "id").values_list("run_id", flat=True)) == [
        task.run_id, task.run_id, again.run_id
    ]  # fmt: skip
    with pytest.raises(TaskConflict, match="Only a failed or cancelled task can be retried"):
        task_retry(task_id=task.task_id)


def test_retry_and_cancel_over_the_api(client: Client, demo: Cluster) -> None:
    task = unpublished(alloc(A))
    resp = client.post(f"/api/v1/tasks/{task.task_id}/retry/")
    assert resp.status_code == 409
    resp = client.post(f"/api/v1/tasks/{task.task_id}/cancel/")
    assert resp.status_code == 200 and resp.json()["task_status"] == "cancelled"
    assert client.post(f"/api/v1/tasks/{task.task_id}/cancel/").status_code == 409


def test_cancel_marks_the_task_for_its_node(demo: Cluster, django_capture_on_commit_callbacks: Any) -> None:
    task = unpublished(alloc(B))
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = task_cancel(task_id=task.task_id, source="op")
    assert cancelled.task_status == "cancelled"  # never published: no node can have it
    assert run_end.end_of(task.run_id) is run_end.End.CANCEL
    fail(task)  # a late report from the node changes nothing
    task.refresh_from_db()
    assert task.task_status == "cancelled"


def test_least_loaded_picks_the_online_node_with_least_work(demo: Cluster, settings: Any) -> None:
    settings.TASKHUB_ASSIGNMENT = {"volume_create": "least_loaded"}
    alloc(A)
    alloc(A)
    alloc(B)
    Node.objects.filter(name=C).update(last_heartbeat=datetime.now(UTC) - timedelta(hours=1))  # offline
    units = [{"node": A}, {"node": B}, {"node": C}]
    task, _ = task_create(task_type="volume_create", execute=True, task_data=vol_data("v1", units))
    assert task.node == B


def test_explicit_rule_needs_a_node(demo: Cluster, settings: Any) -> None:
    settings.TASKHUB_ASSIGNMENT = {"block_alloc": "explicit"}
    with pytest.raises(InvalidInput, match="assigned explicitly"):
        alloc(A)
    assert alloc(A, node=A).node == A


def test_dependent_tasks_share_a_node_and_wait_their_turn(demo: Cluster, settings: Any) -> None:
    settings.TASKHUB_ASSIGNMENT = {"volume_start": "least_loaded", "volume_stop": "least_loaded"}
    units = [{"node": A}, {"node": B}]
    create, _ = task_create(task_type="volume_create", execute=True, task_data=vol_data("v1", units))
    Volume.objects.create(name="v1", cluster=demo, type="replicate", state="created")
    for _ in range(3):
        alloc(A)  # A is now the busiest; the rule alone would move the start to B
    start, _ = task_create(task_type="volume_start", execute=True, task_data={"cluster": "demo", "name": "v1"})
    assert create.node == A and start.node == A
    assert start.order_key == create.order_key == "volume:demo:v1"
    # The start must not run while the create is unfinished.
    assert dispatch.publish(start.task_id) is False
    assert GlobalTask.objects.get(pk=start.task_id).dispatched_at is None


def test_order_release_publishes_the_next_task(demo: Cluster, redis_stream: redis.Redis) -> None:
    units = [{"node": A}, {"node": B}]
    create, _ = task_create(task_type="volume_create", execute=True, task_data=vol_data("v2", units))
    GlobalTask.objects.filter(pk=create.pk).update(task_status="completed")
    Volume.objects.create(name="v2", cluster=demo, type="replicate", state="created")
    start, _ = task_create(task_type="volume_start", execute=True, task_data={"cluster": "demo", "name": "v2"})
    assert dispatch.publish_next("volume:demo:v2") is True
    assert GlobalTask.objects.get(pk=start.task_id).dispatched_at is not None
    from taskhub.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(f"node.{A}")  # type: ignore[attr-defined]


def test_a_silent_node_goes_offline_and_its_tasks_fail_or_move(demo: Cluster, settings: Any) -> None:
    settings.TASKHUB_NODE_OFFLINE_SECONDS = 20
    stale = datetime.now(UTC) - timedelta(seconds=60)
    running = alloc(A)
    node_report(running.task_id, "in_progress")
    units = [{"node": A}, {"node": B}]
    vol, _ = task_create(task_type="volume_create", execute=True, task_data=vol_data("v3", units), node=A)
    busy_live = alloc(B)
    node_report(busy_live.task_id, "in_progress")
    Node.objects.filter(name=A).update(last_heartbeat=stale)

    assert sweep_dead_nodes() == 1
    assert sweep_dead_nodes() == 0  # once
    assert Node.objects.get(name=A).offline_since is not None
    running.refresh_from_db()
    assert running.task_status == "failed"
    assert running.task_status_data["error"]["type"] == "NodeOffline"
    assert f"node {A} went offline" in running.task_status_data["error"]["message"]
    vol.refresh_from_db()  # a volume task may move to another participant
    assert (vol.task_status, vol.node, vol.attempts) == ("pending", B, 1)
    assert vol.task_status_data["reassigned"]["from"] == A
    busy_live.refresh_from_db()
    assert busy_live.task_status == "in_progress"  # a live node keeps its long task


def test_a_heartbeat_brings_a_node_back(demo: Cluster) -> None:
    from tasks_app.fleet.services import record_heartbeats
    from workers.protocol.messages import Heartbeat

    Node.objects.filter(name=A).update(offline_since=datetime.now(UTC))
    record_heartbeats([Heartbeat(node=A, at=time.time(), info={})])
    assert Node.objects.get(name=A).offline_since is None


def test_long_poll_answers_at_once_for_a_final_task_and_waits_otherwise(client: Client, demo: Cluster) -> None:
    done = alloc(A)
    fail(done)
    started = time.monotonic()
    assert client.get(f"/api/v1/tasks/{done.task_id}/", {"wait": "5"}).json()["task_status"] == "failed"
    assert time.monotonic() - started < 2
    open_task = alloc(B)
    started = time.monotonic()
    assert client.get(f"/api/v1/tasks/{open_task.task_id}/", {"wait": "0.6"}).json()["task_status"] == "pending"
    assert time.monotonic() - started >= 0.5
    assert client.get(f"/api/v1/tasks/{open_task.task_id}/", {"wait": "600"}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_long_poll_returns_when_the_task_changes(client: Client, demo: Cluster) -> None:
    import threading

    task = alloc(C)

    def later() -> None:
        time.sleep(0.5)
        node_report(task.task_id, "in_progress", {"progress": {"percent": 10}})

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    body = client.get(f"/api/v1/tasks/{task.task_id}/", {"wait": "20"}).json()
    thread.join()
    assert body["task_status"] == "in_progress" and body["task_status_data"]["progress"]["percent"] == 10
    assert time.monotonic() - started < 10


def test_following_new_tasks_never_misses_or_repeats(client: Client) -> None:
    make: Callable[[], str] = lambda: task_create(task_type="follow")[0].task_id  # noqa: E731
    first = [make() for _ in range(5)]
    page = client.get("/api/v1/tasks/", {"task_type": "follow", "page_size": "3"}).json()
    seen = [t["task_id"] for t in page["results"]]
    page = client.get(page["next"]).json()
    seen += [t["task_id"] for t in page["results"]]
    assert page["next"] is None and seen == first
    later = [make() for _ in range(4)]
    page = client.get("/api/v1/tasks/", {"task_type": "follow", "after": page["resume"]}).json()
    assert [t["task_id"] for t in page["results"]] == later
    quiet = client.get("/api/v1/tasks/", {"task_type": "follow", "after": page["resume"]}).json()
    assert quiet["results"] == [] and quiet["resume"] == page["resume"]
    since = client.get("/api/v1/tasks/", {"task_type": "follow", "since": str(10**10)}).json()
    assert since["results"] == []
