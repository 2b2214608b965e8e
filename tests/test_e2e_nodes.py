"""End to end with real processes: a writer, node workers (Celery, on a real Redis), a scheduler.

Node workers run as `python -m workers`, under the node's settings, with no database settings at all
(not even a DATABASE_URL in their environment): everything they report must travel through the
update stream. Node names are unique per run, so parallel runs never share a queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import transaction
from django.test import Client

from taskhub.celery import app as celery_app
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import GlobalTask, Node, Volume
from tasks_app.tasks.services import task_create
from tests.conftest import MANAGE, database_url
from tests.helpers import start_manage, start_node_worker, stop, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN = uuid.uuid4().hex[:6]
PREFIX = f"taskhub-test:{RUN}:updates"
N1, N2, N3, OFF, LATE = (f"e2e{RUN}-{n}" for n in ("n1", "n2", "n3", "offline", "late"))
FINAL = ("completed", "failed", "cancelled")


class Cluster:
    """The processes of one test cluster, and how to (re)start them."""

    redis_url: str = celery_app.conf.broker_url

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        base = dict(os.environ)
        # The broker this test process publishes to is fixed when Celery first reads its settings,
        # so the nodes use that one (scripts/test.sh points it at the tests' Redis database).
        base.update(
            REDIS_URL=self.redis_url,
            CELERY_BROKER_URL=self.redis_url,
            TASKHUB_STREAM_PREFIX=PREFIX,
            TASKHUB_HANDLER_MODULES="tests.handlers_for_tests",
            TASKHUB_HEARTBEAT_SECONDS="1",
            TASKHUB_NODE_OFFLINE_SECONDS="5",
            TASKHUB_FANOUT_TIMEOUT="15",
            TASKHUB_REDELIVERY_SECONDS="3",
            TASKHUB_RETRY_BACKOFF_SECONDS="0.5",
            TASKHUB_RETRY_LIMITS="volume_create=1",
            TASKHUB_DISPATCH_GRACE_SECONDS="1",
            TASKHUB_SWEEP_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        self.env = base

    def data_dir(self, node: str) -> Path:
        return self.tmp / "nodes" / node

    def start_node(self, node: str, concurrency: int = 4) -> None:
        # A node has the broker only: no database settings at all.
        env = {k: v for k, v in self.env.items() if k != "DATABASE_URL"}
        args = [node, "--data-dir", str(self.data_dir(node)), "--concurrency", str(concurrency), "--loglevel", "INFO"]
        self.procs[node] = start_node_worker(args, env, self.tmp / f"{node}.log")

    def start_server_side(self, name: str, args: list[str]) -> None:
        self.procs[name] = start_manage(args, dict(self.env, DATABASE_URL=database_url()), self.tmp / f"{name}.log")

    def alive(self, node: str) -> bool:
        return bool(redis.Redis.from_url(self.redis_url).exists(f"{PREFIX}:alive:{node}"))

    def idle(self, node: str) -> bool:
        """Nothing waits in the node's queue, and nothing it took is unacknowledged (still running)."""
        broker = redis.Redis.from_url(self.redis_url)
        if broker.llen(f"node.{node}"):
            return False
        unacked: list[bytes] = broker.hvals("unacked")  # type: ignore[assignment]  # kombu's in-flight messages
        return not any(f'"node.{node}"]'.encode() in raw for raw in unacked)

    def kill(self, name: str) -> None:
        stop(self.procs[name], signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    for node in (N1, N2, N3):
        c.start_node(node)
    try:
        wait_until(lambda: all(c.alive(n) for n in (N1, N2, N3)), 60, "three node workers to heartbeat")
        yield c
    except AssertionError:
        print(c.logs())
        raise
    finally:
        c.stop_all()
        client = redis.Redis.from_url(c.redis_url)
        for pattern in (f"{PREFIX}*", f"*e2e{RUN}*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)


@pytest.fixture
def writer(cluster: Cluster, settings: Any, transactional_db: None) -> Iterator[Cluster]:
    """Per test, since the database is new each test: the writer, the cluster rows, our stream prefix."""
    settings.TASKHUB_STREAM_PREFIX = PREFIX
    settings.REDIS_URL = cluster.redis_url
    settings.TASKHUB_HANDLER_MODULES = ["tests.handlers_for_tests"]
    import tests.handlers_for_tests  # noqa: F401  (the test process validates test_sleep tasks too)

    demo = cluster_ensure(name=f"demo{RUN}")
    for node in (N1, N2, N3, OFF, LATE):
        node_register(cluster=demo, name=node)
    cluster.start_server_side("writer", ["run_writer"])
    yield cluster
    stop(cluster.procs.pop("writer"))


def wait_final(task_id: str, cluster: Cluster, timeout: float = 60) -> GlobalTask:
    def done() -> GlobalTask | None:
        task = GlobalTask.objects.get(pk=task_id)
        return task if task.task_status in FINAL else None

    try:
        return wait_until(done, timeout, f"task {task_id} to finish", interval=0.2)  # type: ignore[no-any-return]
    except AssertionError:
        row = GlobalTask.objects.filter(pk=task_id).values().first()
        print(f"task: {row}\n{cluster.logs()}")
        raise


def volume(name: str, nodes: list[str]) -> str:
    data = {"cluster": f"demo{RUN}", "name": name, "type": "replicate", "storage_units": [{"node": n} for n in nodes]}
    task, _ = task_create(task_type="volume_create", task_data=data, execute=True, source="test")
    return task.task_id


def statuses(task: GlobalTask) -> list[str]:
    return list(task.history.order_by("at", "id").values_list("to_status", flat=True))


def test_volume_across_three_nodes(writer: Cluster) -> None:
    task = wait_final(volume("vol1", [N1, N2, N3]), writer)
    assert task.task_status == "completed", task.task_status_data
    assert statuses(task) == ["pending", "received", "in_progress", "completed"]
    assert set(task.history.exclude(to_status="pending").values_list("source", flat=True)) == {f"node:{N1}"}
    vol = Volume.objects.get(name="vol1")
    units = {u.node.name: Path(u.path) for u in vol.storage_units.all()}
    assert set(units) == {N1, N2, N3}
    for node, path in units.items():
        assert path.is_relative_to(writer.data_dir(node))
        assert (path / ".taskhub-unit.json").is_file()
    # The heartbeats reached the table through the stream too.
    wait_until(lambda: Node.objects.filter(name=N3, last_heartbeat__isnull=False).exists(), 10, "heartbeats")


def test_an_offline_participant_fails_the_task_naming_it(writer: Cluster) -> None:
    task = wait_final(volume("vol2", [N1, N2, OFF]), writer)
    assert task.task_status == "failed"
    data = task.task_status_data
    assert OFF in data["error"]["message"], data
    assert data["nodes"][OFF]["ok"] is False and "offline" in data["nodes"][OFF]["error"]["message"]
    assert data["nodes"][N2]["ok"] is True
    assert data["retries"] == 1  # one automatic retry (TASKHUB_RETRY_LIMITS), then failed for good
    assert not Volume.objects.filter(name="vol2").exists()
    # Rollback: the units made on the nodes that succeeded are gone again.
    assert set(data["rolled_back"]) == {N1, N2} and all(a["ok"] for a in data["rolled_back"].values())
    assert not list(writer.data_dir(N1).glob("volumes/vol2/*"))
    assert not list(writer.data_dir(N2).glob("volumes/vol2/*"))


def test_a_message_delivered_twice_runs_once(writer: Cluster) -> None:
    from tasks_app.tasks.dispatch import publish

    task, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N2, "seconds": 1}, source="test")
    publish(task.task_id)  # a second copy, as a sweep racing the first publish would send
    task = wait_final(task.task_id, writer)
    assert task.task_status == "completed"
    runs = writer.data_dir(N2) / f"runs-{task.task_id}.log"
    # Both copies reached the node (its worker logs each message it takes, by Celery id: the run id),
    # and neither is left in its queue or unacknowledged: the duplicate was handled, not still on its way.
    received = f"[{task.run_id}] received"
    log = writer.tmp / f"{N2}.log"
    wait_until(lambda: log.read_text().count(received) >= 2, 20, "the node to take both copies")
    wait_until(lambda: writer.idle(N2), 20, "the duplicate to be acknowledged")
    assert len(runs.read_text().splitlines()) == 1
    assert GlobalTask.objects.get(pk=task.task_id).task_status == "completed"


def test_node_killed_mid_task_finishes_it_after_restart(writer: Cluster) -> None:
    task, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N3, "seconds": 4}, source="test")
    wait_until(lambda: GlobalTask.objects.get(pk=task.task_id).task_status == "in_progress", 30, "the task to start")
    writer.kill(N3)
    writer.start_node(N3)
    done = wait_final(task.task_id, writer, timeout=90)
    assert done.task_status == "completed", done.task_status_data
    runs = (writer.data_dir(N3) / f"runs-{task.task_id}.log").read_text().splitlines()
    assert len(runs) == 2  # the killed run, and the one that finished


def test_a_task_whose_publish_never_happened_is_delivered_by_the_sweep(writer: Cluster) -> None:
    """The API process dies right after its commit, before on_commit publishes: the sweep delivers, as for
    a lost message, once TASKHUB_REDISPATCH_SECONDS have passed (the insert recorded the publish)."""
    script = f"""
import os, signal
from django.db import transaction
from tasks_app.tasks.services import task_create
import tests.handlers_for_tests
with transaction.atomic():
    # Registered first, so it runs first after the commit: the process dies before publishing.
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    data = {{"node": "{N1}", "seconds": 0}}
    task, _ = task_create(task_type="test_sleep", execute=True, task_data=data, task_id="orphan-{RUN}")
"""
    env = dict(writer.env, DATABASE_URL=database_url())
    died = subprocess.run([*MANAGE, "shell", "-c", script], env=env)
    assert died.returncode == -signal.SIGKILL
    orphan = GlobalTask.objects.get(pk=f"orphan-{RUN}")
    assert orphan.dispatched_at == orphan.task_create_timestamp and orphan.task_status == "pending"
    assert not redis.Redis.from_url(writer.redis_url).llen(f"node.{N1}")  # never published
    env_before = dict(writer.env)
    writer.env["TASKHUB_REDISPATCH_SECONDS"] = "2"
    try:
        writer.start_server_side("scheduler", ["run_scheduler"])
    finally:
        writer.env = env_before
    try:
        done = wait_final(orphan.task_id, writer)
    finally:
        stop(writer.procs.pop("scheduler"))
    assert done.task_status == "completed"
    assert done.dispatched_at is not None


def test_without_a_commit_nothing_is_published(writer: Cluster) -> None:
    # A node no worker serves: a message sent to it stays in its queue, where the test can see it (a
    # running node's queue is empty whether or not something was sent, as the node drains it).
    unserved = f"e2e{RUN}-unserved"
    node_register(cluster=cluster_ensure(name=f"demo{RUN}"), name=unserved)
    queue = f"node.{unserved}"
    broker = redis.Redis.from_url(writer.redis_url)
    with pytest.raises(RuntimeError), transaction.atomic():
        task_create(task_type="test_sleep", execute=True, task_data={"node": unserved}, task_id=f"rolled-back-{RUN}")
        raise RuntimeError("the request failed after the insert")
    assert not GlobalTask.objects.filter(pk=f"rolled-back-{RUN}").exists()
    assert broker.llen(queue) == 0
    # The same with a commit does put its run's message in that queue: the check above could fail.
    with transaction.atomic():
        sent, _ = task_create(
            task_type="test_sleep", execute=True, task_data={"node": unserved}, task_id=f"committed-{RUN}"
        )
    try:
        messages: list[bytes] = broker.lrange(queue, 0, -1)  # type: ignore[assignment]
        assert [json.loads(raw)["headers"]["id"] for raw in messages] == [sent.run_id]
    finally:
        broker.delete(queue)


def test_a_failed_volume_is_retried_to_success_after_its_node_comes_back(writer: Cluster) -> None:
    from tasks_app.tasks.services import task_retry

    task_id = volume("vol3", [N1, N2, OFF])
    assert wait_final(task_id, writer).task_status == "failed"
    writer.start_node(OFF)
    try:
        wait_until(lambda: writer.alive(OFF), 60, "the missing node to come back")
        task_retry(task_id=task_id, source="test")
        done = wait_final(task_id, writer)
        assert done.task_status == "completed", done.task_status_data
        assert done.attempts == 1
        assert statuses(done)[-5:] == ["failed", "pending", "received", "in_progress", "completed"]
        units = Volume.objects.get(name="vol3").storage_units.all()
        assert sorted(u.node.name for u in units) == sorted([N1, N2, OFF])
        assert all(Path(u.path).is_dir() for u in units)
    finally:
        stop(writer.procs.pop(OFF))


def test_recoverable_errors_retry_with_backoff(writer: Cluster) -> None:
    task, _ = task_create(task_type="test_flaky", execute=True, task_data={"node": N1, "succeed_on": 3}, source="test")
    done = wait_final(task.task_id, writer)
    assert done.task_status == "completed", done.task_status_data
    assert done.task_status_data["runs"] == 3


def test_progress_shows_while_the_task_runs(writer: Cluster) -> None:
    task, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N2, "seconds": 3}, source="test")

    def progress() -> float:
        row = GlobalTask.objects.get(pk=task.task_id)
        if row.task_status != "in_progress":
            return 0.0
        return float(row.task_status_data.get("progress", {}).get("percent", 0))

    assert 0 < wait_until(progress, 30, "progress while running", interval=0.1) < 100
    assert wait_final(task.task_id, writer).task_status == "completed"


def test_a_running_task_is_cancelled_on_its_node(writer: Cluster) -> None:
    from tasks_app.tasks.services import task_cancel

    task, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N2, "seconds": 30}, source="test")
    wait_until(lambda: GlobalTask.objects.get(pk=task.task_id).task_status == "in_progress", 30, "the task to run")
    # Running on its node: cancelling until the node has stopped it, not cancelled at once.
    assert task_cancel(task_id=task.task_id, source="test").task_status == "cancelling"
    # The handler stops at its next step: its run is recorded as ended well before its 30 s.
    ledger = writer.data_dir(N2) / ".taskhub" / "runs" / f"{task.run_id}.0.done.json"
    done = wait_final(task.task_id, writer, timeout=15)
    assert done.task_status == "cancelled", done.task_status_data
    assert ledger.exists()
    assert statuses(done)[-2:] == ["cancelling", "cancelled"]
    assert done.history.get(to_status="cancelled").source == f"node:{N2}"
    assert done.task_status_data["cancel"]["outcome"] == "stopped on its node"


def test_a_cancelled_pending_task_never_starts(writer: Cluster) -> None:
    from tasks_app.tasks.services import task_cancel

    task, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": LATE, "seconds": 0}, source="test")
    wait_until(lambda: GlobalTask.objects.get(pk=task.task_id).dispatched_at is not None, 10, "the publish")
    # Published, so a node may have it: cancelling until a node says it never ran.
    assert task_cancel(task_id=task.task_id, source="test").task_status == "cancelling"
    writer.start_node(LATE)
    try:
        wait_until(lambda: writer.alive(LATE), 60, "the late node to start")
        runs = writer.data_dir(LATE) / ".taskhub" / "runs"
        done = wait_final(task.task_id, writer, timeout=30)
        assert done.task_status == "cancelled"
        assert done.task_status_data["cancelled"]["stopped"] == "before it started"
        assert not (writer.data_dir(LATE) / f"runs-{task.task_id}.log").exists()
        assert not list(runs.glob(f"{task.run_id}*.done.json"))
    finally:
        stop(writer.procs.pop(LATE))


def test_a_node_killed_for_good_goes_offline_and_its_tasks_fail(writer: Cluster) -> None:
    writer.start_server_side("scheduler", ["run_scheduler"])
    try:
        task, _ = task_create(
            task_type="test_sleep", execute=True, task_data={"node": N3, "seconds": 30}, source="test"
        )
        wait_until(lambda: GlobalTask.objects.get(pk=task.task_id).task_status == "in_progress", 30, "the task")
        writer.kill(N3)
        # TASKHUB_NODE_OFFLINE_SECONDS=5 and a sweep every second: well within 30 s.
        done = wait_final(task.task_id, writer, timeout=30)
        assert done.task_status == "failed"
        assert done.task_status_data["error"]["type"] == "NodeOffline"
        assert f"node {N3} went offline" in done.task_status_data["error"]["message"]
        assert Node.objects.get(name=N3).offline_since is not None
    finally:
        stop(writer.procs.pop("scheduler"))
        writer.start_node(N3)


# --- issue 7: tracked tasks, one identity per run, honest cancel, nodes and blocks -------------------


def test_a_tracked_task_is_stored_as_sent_and_never_touched_by_a_node(writer: Cluster) -> None:
    """The cluster controller gateway's pattern, with three live nodes that could run the type."""
    client = Client()
    body = {"task_type": "cluster_infra_creation", "task_data": {"cluster_id": f"c-{RUN}"}}
    created = client.post("/task", data=json.dumps(body), content_type="application/json")
    assert created.status_code == 200, created.content
    task_id = created.json()["data"]["task_id"]
    wait_until(lambda: all(writer.idle(n) for n in (N1, N2, N3)), 10, "the nodes to have nothing")
    report = {"task_id": task_id, "status": "complete", "task_status_data": {"endpoint": "10.0.0.7"}}
    assert client.post("/task_update", data=json.dumps(report), content_type="application/json").status_code == 200
    done = wait_final(task_id, writer)
    assert (done.task_status, done.task_status_data, done.task_data) == (
        "completed",
        {"endpoint": "10.0.0.7"},
        {"cluster_id": f"c-{RUN}"},
    )
    assert (done.node, done.run_id, done.dispatched_at) == ("", "", None)
    assert not any(s.startswith("node:") for s in done.history.values_list("source", flat=True))
    for node in (N1, N2, N3):
        assert not (writer.data_dir(node) / "clusters" / f"c-{RUN}").exists()


def test_re_created_task_ids_never_replay_or_block_on_old_runs(writer: Cluster) -> None:
    from tasks_app.tasks.services import task_cancel, task_delete, task_retry

    # A task that completed, deleted and created again, runs again (its old run's outcome is not replayed).
    first, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N1}, task_id=f"again-{RUN}")
    assert wait_final(first.task_id, writer).task_status == "completed"
    task_delete(task_id=first.task_id)
    second, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N1}, task_id=f"again-{RUN}")
    assert second.run_id != first.run_id
    assert wait_final(second.task_id, writer).task_status == "completed"
    assert len((writer.data_dir(N1) / f"runs-again-{RUN}.log").read_text().splitlines()) == 2

    # A cancelled one: its cancel marker belongs to its run, not to the id.
    slow, _ = task_create(
        task_type="test_sleep", execute=True, task_data={"node": N2, "seconds": 30}, task_id=f"cxl-{RUN}"
    )
    wait_until(lambda: GlobalTask.objects.get(pk=slow.task_id).task_status == "in_progress", 30, "it to run")
    task_cancel(task_id=slow.task_id, source="test")
    assert wait_final(slow.task_id, writer).task_status == "cancelled"
    task_delete(task_id=slow.task_id)
    fresh, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": N2}, task_id=f"cxl-{RUN}")
    assert wait_final(fresh.task_id, writer).task_status == "completed"

    # A retried one: the run its retry voided is not this id's run either.
    too_big = {"cluster": f"demo{RUN}", "node": N3, "blocks": 10**6}
    failing, _ = task_create(task_type="block_alloc", execute=True, task_data=too_big, task_id=f"void-{RUN}")
    assert wait_final(failing.task_id, writer).task_status == "failed"
    task_retry(task_id=failing.task_id, source="test")
    assert wait_final(failing.task_id, writer).task_status == "failed"
    task_delete(task_id=failing.task_id)
    small = {"cluster": f"demo{RUN}", "node": N3, "blocks": 7}
    ok, _ = task_create(task_type="block_alloc", execute=True, task_data=small, task_id=f"void-{RUN}")
    done = wait_final(ok.task_id, writer)
    assert done.task_status == "completed" and done.task_status_data["blocks"] == 7, done.task_status_data


def test_block_alloc_free_then_the_node_leaves(writer: Cluster) -> None:
    from tasks_app.fleet.models import BlockAllocation
    from tasks_app.tasks.services import task_delete

    blk = f"e2e{RUN}-blk"
    node_register(cluster=cluster_ensure(name=f"demo{RUN}"), name=blk)
    writer.start_node(blk)
    try:
        wait_until(lambda: writer.alive(blk), 60, "the node to start")
        data = {"cluster": f"demo{RUN}", "node": blk, "blocks": 5}
        held, _ = task_create(task_type="block_alloc", execute=True, task_data=data, task_id=f"blk-{RUN}")
        assert wait_final(held.task_id, writer).task_status == "completed"
        assert BlockAllocation.objects.get(pk=held.task_id).blocks == 5
        free = {"cluster": f"demo{RUN}", "node": blk, "allocation": held.task_id}
        freed, _ = task_create(task_type="block_free", execute=True, task_data=free)
        done = wait_final(freed.task_id, writer)
        assert done.task_status == "completed" and done.task_status_data["freed"] == 5, done.task_status_data
        assert not BlockAllocation.objects.filter(pk=held.task_id).exists()
        assert json.loads((writer.data_dir(blk) / "blocks.json").read_text())["allocations"] == {}
        # The id is free again: an allocation under it now is a new one, of its own size.
        task_delete(task_id=held.task_id)
        again, _ = task_create(
            task_type="block_alloc", execute=True, task_data={**data, "blocks": 7}, task_id=held.task_id
        )
        done = wait_final(again.task_id, writer)
        assert done.task_status == "completed" and done.task_status_data["blocks"] == 7, done.task_status_data
        freed, _ = task_create(task_type="block_free", execute=True, task_data=free)
        assert wait_final(freed.task_id, writer).task_status == "completed"
        removal, _ = task_create(
            task_type="node_removal", execute=True, task_data={"cluster": f"demo{RUN}", "node": blk}
        )
        done = wait_final(removal.task_id, writer)
        assert done.task_status == "completed", done.task_status_data
        assert Node.objects.get(name=blk).state == "removed"
        assert not (writer.data_dir(blk) / "membership.json").exists()
    finally:
        stop(writer.procs.pop(blk))


def test_cancelling_a_running_volume_task_waits_for_its_node_to_stop_and_undo(writer: Cluster) -> None:
    """volume_start fans out to a busy node; cancelled meanwhile, it is cancelling until the initiator has
    stopped and restored what it changed, and the volume's next task waits for that."""
    from tasks_app.tasks.services import task_cancel

    slow = f"e2e{RUN}-slow"
    node_register(cluster=cluster_ensure(name=f"demo{RUN}"), name=slow)
    writer.start_node(slow, concurrency=1)
    try:
        wait_until(lambda: writer.alive(slow), 60, "the slow node to start")
        name = f"vc{RUN}"
        assert wait_final(volume(name, [N1, slow]), writer).task_status == "completed"
        # Keep the slow node's only slot busy, with one more task queued behind it.
        busy, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": slow, "seconds": 8})
        wait_until(lambda: GlobalTask.objects.get(pk=busy.task_id).task_status == "in_progress", 30, "the busy task")
        queued, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": slow, "seconds": 0})
        wait_until(lambda: GlobalTask.objects.get(pk=queued.task_id).dispatched_at is not None, 10, "its publish")
        start, _ = task_create(
            task_type="volume_start", execute=True, task_data={"cluster": f"demo{RUN}", "name": name}
        )
        wait_until(lambda: GlobalTask.objects.get(pk=start.task_id).task_status == "in_progress", 30, "the start")
        unit = Path(Volume.objects.get(name=name).storage_units.get(node__name=N1).path)
        wait_until(lambda: json.loads((unit / ".taskhub-unit.json").read_text())["state"] == "started", 10, "unit 0")
        delete, _ = task_create(
            task_type="volume_delete", execute=True, task_data={"cluster": f"demo{RUN}", "name": name}
        )

        assert task_cancel(task_id=start.task_id, source="test").task_status == "cancelling"
        assert task_cancel(task_id=queued.task_id, source="test").task_status == "cancelling"
        assert GlobalTask.objects.get(pk=delete.task_id).dispatched_at is None  # waits for the start
        # The initiator sends no more parts, waits for the one the busy node holds (it refuses to start
        # once the node gets to it), has both nodes undo what the run did, and only then reports.
        done = wait_final(start.task_id, writer, timeout=40)
        assert done.task_status == "cancelled", done.task_status_data
        cancelled = done.task_status_data["cancelled"]
        assert cancelled["stopped"] == "during the fan-out"
        assert cancelled["nodes"][slow]["error"]["type"] == "Cancelled"  # its part never ran
        undone = cancelled["compensated"]
        assert set(undone) == {N1, slow}
        assert undone[N1]["result"] == {"restored": [{"index": 0, "state": "created"}]}  # put back as it was
        assert undone[slow]["result"] == {"restored": []}  # nothing of this run to undo there
        assert "compensation_sent" not in cancelled
        # Only now is the delete released, and it runs after the start ended.
        ended_at = done.history.get(to_status="cancelled").at
        removed = wait_final(delete.task_id, writer, timeout=60)
        assert removed.task_status == "completed", removed.task_status_data
        assert removed.history.get(to_status="received").at >= ended_at
        assert not Volume.objects.filter(name=name).exists()
        # The queued task never ran: its node refused it (the run's cancel marker; Celery's revoke drops only
        # messages not yet handed to the worker's pool), and said so.
        dropped = wait_final(queued.task_id, writer, timeout=30)
        assert dropped.task_status == "cancelled"
        assert dropped.task_status_data["cancelled"]["stopped"] == "before it started"
        assert not (writer.data_dir(slow) / f"runs-{queued.task_id}.log").exists()
    finally:
        stop(writer.procs.pop(slow))


def test_a_cancelled_message_still_in_the_broker_is_revoked_and_the_node_confirms(writer: Cluster) -> None:
    """One slot, prefetching four: the last of many queued tasks is still in Redis when it is cancelled.
    Celery's revoke drops it when the worker fetches it, and the node reports the run cancelled."""
    from tasks_app.tasks.services import task_cancel

    busy_node = f"e2e{RUN}-one"
    node_register(cluster=cluster_ensure(name=f"demo{RUN}"), name=busy_node)
    writer.start_node(busy_node, concurrency=1)
    try:
        wait_until(lambda: writer.alive(busy_node), 60, "the node to start")
        busy, _ = task_create(task_type="test_sleep", execute=True, task_data={"node": busy_node, "seconds": 4})
        wait_until(lambda: GlobalTask.objects.get(pk=busy.task_id).task_status == "in_progress", 30, "the busy task")
        queued = [task_create(task_type="test_sleep", execute=True, task_data={"node": busy_node})[0] for _ in range(8)]
        last = queued[-1]
        wait_until(lambda: GlobalTask.objects.get(pk=last.task_id).dispatched_at is not None, 10, "its publish")
        assert task_cancel(task_id=last.task_id, source="test").task_status == "cancelling"
        done = wait_final(last.task_id, writer, timeout=60)
        assert done.task_status == "cancelled", done.task_status_data
        assert done.task_status_data["cancelled"] == {
            "message": "revoked before it started",
            "stopped": "before it started",
        }
        assert done.history.get(to_status="cancelled").source == f"node:{busy_node}"
        assert not (writer.data_dir(busy_node) / f"runs-{last.task_id}.log").exists()
        for other in queued[:-1]:
            assert wait_final(other.task_id, writer).task_status == "completed"
    finally:
        stop(writer.procs.pop(busy_node))
