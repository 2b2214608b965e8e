"""Fleet operations (issue 11): balanced placement by default, labels, capacity, cordon and drain, and a
node's lifecycle (PATCH, DELETE), over the API and on the real database; one drain end to end with real
processes (a writer, the scheduler, node workers), and concurrent creates against a real gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

import tests.fleet_handlers  # noqa: F401  (the test process places fleet_spread tasks too)
from taskhub.celery import app as celery_app
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node, Volume
from tasks_app.tasks.services import task_create
from tests.conftest import database_url
from tests.helpers import free_port, node_report, start_gunicorn, start_manage, start_node_worker, stop, wait_until
from workers.protocol.queues import node_queue
from workers.protocol.status import UNFINISHED

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

RUN = os.urandom(3).hex()
CLUSTER = f"fo{RUN}"
A, B, C = (f"fo{RUN}-{n}" for n in "abc")
TASKS = "/api/v1/tasks/"


# --- helpers ----------------------------------------------------------------------------------------------


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def patch(client: Client, path: str, body: Any) -> Any:
    return client.patch(path, json.dumps(body), content_type="application/json")


def volume_body(name: str, nodes: list[str], **extra: Any) -> dict[str, Any]:
    """A POST /api/v1/tasks/ body: a volume_create with a storage unit on each node, in that order."""
    data = {"cluster": CLUSTER, "name": name, "type": "replicate", "storage_units": [{"node": n} for n in nodes]}
    return {"task_type": "volume_create", "task_data": data, **extra}


def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = post(client, TASKS, body)
    assert resp.status_code == 201, resp.content
    answer: dict[str, Any] = resp.json()
    return answer


def history(task_id: str) -> list[tuple[str, str, str]]:
    rows = GlobalTask.objects.get(pk=task_id).history.order_by("at", "id")
    return [(f, t, s) for f, t, s in rows.values_list("from_status", "to_status", "source")]


def complete_volume(task_id: str) -> None:
    """What the volume_create's node reports when it made every unit (the completion hook records them)."""
    task = GlobalTask.objects.get(pk=task_id)
    units = [
        {"node": u["node"], "path": f"/data/{task.task_data['name']}/{i}", "index": i}
        for i, u in enumerate(task.task_data["storage_units"])
    ]
    result = {"volume": task.task_data["name"], "type": "replicate", "storage_units": units}
    node_report(task_id, "completed", result)
    assert GlobalTask.objects.get(pk=task_id).task_status == "completed"


def unschedulable(task_id: str) -> str:
    """The stored task is failed as unschedulable, never published; returns its message."""
    task = GlobalTask.objects.get(pk=task_id)
    assert task.task_status == "failed", (task.task_status, task.task_status_data)
    error = task.task_status_data["error"]
    assert error["type"] == "Unschedulable", error
    assert task.dispatched_at is None
    assert task.placement["outcome"] == "unschedulable"
    assert [(f, t) for f, t, _ in history(task_id)] == [("", "failed")]
    return str(error["message"])


def drop_queues(*nodes: str) -> None:
    """What a test published to nodes no worker serves."""
    with celery_app.connection_for_write() as conn:
        for node in nodes:
            # The queue, and the binding kombu keeps for it (one key per queue name, and these are per run).
            conn.default_channel.client.delete(node_queue(node), f"_kombu.binding.{node_queue(node)}")  # type: ignore[attr-defined]


@pytest.fixture
def client(api_client: Client) -> Client:
    return api_client


@pytest.fixture
def fleet(redis_stream: redis.Redis) -> Iterator[Cluster]:
    """Three member nodes, fresh heartbeats, no load."""
    cluster = cluster_ensure(name=CLUSTER)
    for name in (A, B, C):
        node_register(cluster=cluster, name=name)
    Node.objects.filter(name__in=(A, B, C)).update(last_heartbeat=datetime.now(UTC))
    yield cluster
    drop_queues(A, B, C)


# --- 1. balanced by default, "first" on request, ordering keys --------------------------------------------


def test_balanced_by_default_spreads_back_to_back_creates(client: Client, fleet: Cluster) -> None:
    placed: list[str] = []
    for i in range(5):
        body = create(client, volume_body(f"bal{i}", [A, B, C]))
        assert body["task_status"] == "pending" and body["placement"]["rule"] == "balanced", body
        assert body["placement"]["node"] == body["node"] == GlobalTask.objects.get(pk=body["task_id"]).node
        placed.append(body["node"])
        if i == 3:  # three placed before it, one each: its record shows every candidate's load
            figures = {c["node"]: c["unfinished"] for c in body["placement"]["candidates"]}
            assert figures == {A: 1, B: 1, C: 1}, body["placement"]
    counts = Counter(placed)
    assert set(counts) == {A, B, C} and max(counts.values()) == 2, placed
    stored = Counter(GlobalTask.objects.filter(task_type="volume_create").values_list("node", flat=True))
    assert stored == counts


def test_the_first_rule_puts_every_create_on_the_first_participant(
    client: Client, fleet: Cluster, settings: Any
) -> None:
    settings.TASKHUB_ASSIGNMENT = {"volume_create": "first"}
    placed = [create(client, volume_body(f"first{i}", [C, A, B])) for i in range(5)]
    assert [(p["node"], p["placement"]["rule"]) for p in placed] == [(C, "first")] * 5
    assert set(GlobalTask.objects.filter(task_type="volume_create").values_list("node", flat=True)) == {C}


def test_tasks_of_one_ordering_key_follow_its_node(client: Client, fleet: Cluster) -> None:
    made = create(client, volume_body("keyed", [A, B, C]))
    assert made["node"] == A  # no load anywhere: the first candidate
    complete_volume(made["task_id"])
    for _ in range(2):  # A is now the busiest: the rule alone would put the start on B or C
        task_create(task_type="noop", task_data={"node": A}, execute=True)
    start = create(client, {"task_type": "volume_start", "task_data": {"cluster": CLUSTER, "name": "keyed"}})
    assert start["node"] == A and start["placement"]["rule"] == "order_key", start["placement"]
    assert start["placement"]["order_key"] == f"volume:{CLUSTER}:keyed"
    # Another volume's task goes elsewhere: the key, not the type, kept the start on A.
    other = create(client, volume_body("other", [A, B, C]))
    assert other["node"] != A


# --- 2. labels --------------------------------------------------------------------------------------------


@pytest.fixture
def labelled(client: Client, fleet: Cluster) -> Cluster:
    for name, disk in ((A, "hdd"), (B, "ssd"), (C, "hdd")):
        resp = patch(client, f"/api/v1/nodes/{name}/", {"labels": {"disk": disk}})
        assert resp.status_code == 200 and resp.json()["labels"] == {"disk": disk}, resp.content
    assert dict(Node.objects.filter(name__in=(A, B, C)).values_list("name", "labels")) == {
        A: {"disk": "hdd"}, B: {"disk": "ssd"}, C: {"disk": "hdd"}
    }  # fmt: skip
    return fleet


def place(name: str, nodes: list[str], constraints: dict[str, Any], node: str | None = None) -> GlobalTask:
    """A volume_create with constraints, through the service (the API's creates: the tests below)."""
    data = volume_body(name, nodes)["task_data"]
    task, created = task_create(
        task_type="volume_create", task_data=data, execute=True, node=node, constraints=constraints, source="test"
    )
    assert created
    return task


def test_a_label_constraint_places_the_task_on_a_node_that_has_it(labelled: Cluster) -> None:
    for i in range(3):  # B gets all of them, however loaded it gets
        task = place(f"ssd{i}", [A, B, C], {"labels": {"disk": "ssd"}})
        stored = GlobalTask.objects.get(pk=task.task_id)
        assert (stored.node, stored.task_status) == (B, "pending"), stored.placement
        assert stored.constraints == {"labels": {"disk": "ssd"}}
        passed = {c["node"]: c.get("passed_over") for c in stored.placement["candidates"]}
        assert passed == {A: "label disk=hdd, not ssd", B: None, C: "label disk=hdd, not ssd"}
    # Without the constraint, B is now the last choice.
    assert place("any", [A, B, C], {}).node == A


def test_a_label_no_node_has_fails_the_create_at_once_naming_each_node(client: Client, labelled: Cluster) -> None:
    task = place("nvme0", [A, B, C], {"labels": {"disk": "nvme"}})
    message = unschedulable(task.task_id)
    assert "disk" in message and "nvme" in message
    for name, disk in ((A, "hdd"), (B, "ssd"), (C, "hdd")):
        assert f"{name}: label disk={disk}, not nvme" in message, message
    shown = client.get(f"{TASKS}{task.task_id}/").json()
    assert (shown["task_status"], shown["task_status_data"]["error"]["message"]) == ("failed", message)
    assert shown["constraints"] == {"labels": {"disk": "nvme"}} and shown["placement"]["outcome"] == "unschedulable"
    # Failed, not in flight: the name is free for a create that may be placed.
    assert create(client, volume_body("nvme0", [A, B, C]))["task_status"] == "pending"


def test_post_api_v1_tasks_keeps_the_constraints_it_accepts(client: Client, labelled: Cluster) -> None:
    body = create(client, volume_body("api-ssd", [A, B, C], constraints={"labels": {"disk": "ssd"}}))
    assert body["constraints"] == {"labels": {"disk": "ssd"}}
    assert (body["node"], body["task_status"]) == (B, "pending"), body["placement"]
    assert GlobalTask.objects.get(pk=body["task_id"]).constraints == {"labels": {"disk": "ssd"}}
    failed = create(client, volume_body("api-nvme", [A, B, C], constraints={"labels": {"disk": "nvme"}}))
    assert failed["task_status"] == "failed" and failed["task_status_data"]["error"]["type"] == "Unschedulable"
    assert f"{B}: label disk=ssd, not nvme" in unschedulable(failed["task_id"])


def test_labels_through_the_seed_create_and_the_bulk_create(client: Client, labelled: Cluster) -> None:
    seed = dict(volume_body("seed-nvme", [A, B, C]), execute=True, constraints={"labels": {"disk": "nvme"}})
    resp = post(client, "/task", seed)
    assert resp.status_code == 200 and resp.json()["success"] is True, resp.content
    assert f"{B}: label disk=ssd, not nvme" in unschedulable(resp.json()["data"]["task_id"])
    seed_ok = dict(volume_body("seed-ssd", [A, B, C]), execute=True, constraints={"labels": {"disk": "ssd"}})
    resp = post(client, "/task", seed_ok)
    assert resp.status_code == 200, resp.content
    placed = GlobalTask.objects.get(pk=resp.json()["data"]["task_id"])
    assert (placed.node, placed.task_status, placed.constraints) == (B, "pending", {"labels": {"disk": "ssd"}})

    items = [
        volume_body("bulk-ssd", [A, B, C], constraints={"labels": {"disk": "ssd"}}),
        volume_body("bulk-nvme", [A, B, C], constraints={"labels": {"disk": "nvme"}}),
    ]
    resp = post(client, f"{TASKS}bulk/", {"tasks": items})
    assert resp.status_code == 201, resp.content
    answer = resp.json()
    assert (answer["created"], answer["failed"]) == (2, 0), answer
    ok_id, failed_id = (r["task_id"] for r in answer["results"])
    ok = GlobalTask.objects.get(pk=ok_id)
    assert (ok.node, ok.task_status) == (B, "pending")
    assert f"{A}: label disk=hdd, not nvme" in unschedulable(failed_id)


def test_bad_constraints_are_a_400_naming_the_field(client: Client, fleet: Cluster) -> None:
    for constraints, named in (
        ({"labels": {"disk": 5}}, "constraints.labels.disk"),
        ({"capacity": {"slots": 0}}, "constraints.capacity.slots"),
        ({"zone": "a"}, "'zone'"),
        ("ssd", "constraints"),
    ):
        resp = post(client, TASKS, volume_body("bad", [A, B, C], constraints=constraints))
        assert resp.status_code == 400, (constraints, resp.content)
        assert named in json.dumps(resp.json()), (constraints, resp.json())
    assert not GlobalTask.objects.exists()


# --- 3. cordon --------------------------------------------------------------------------------------------


def test_a_cordoned_node_gets_no_new_task_until_uncordoned(client: Client, fleet: Cluster) -> None:
    resp = client.post(f"/api/v1/nodes/{A}/cordon/")
    assert resp.status_code == 200 and resp.json()["scheduling"] == "cordoned", resp.content
    assert Node.objects.get(name=A).scheduling == "cordoned"

    placed = [create(client, volume_body(f"cord{i}", [A, B, C])) for i in range(4)]
    assert Counter(p["node"] for p in placed) == {B: 2, C: 2}
    assert all({"node": A, "passed_over": "cordoned"} in p["placement"]["candidates"] for p in placed)

    explicit = create(client, volume_body("cord-explicit", [A, B, C], node=A))
    message = unschedulable(explicit["task_id"])
    assert message == f"unschedulable: the node it names cannot take it ({A}: cordoned)", message
    only = task_create(task_type="noop", task_data={"node": A}, execute=True)[0]  # its only candidate
    assert f"{A}: cordoned" in unschedulable(only.task_id)

    resp = client.post(f"/api/v1/nodes/{A}/uncordon/")
    assert resp.status_code == 200 and resp.json()["scheduling"] == "schedulable", resp.content
    again = create(client, volume_body("uncord", [A, B, C]))  # the least loaded again, by far
    assert again["node"] == A and again["task_status"] == "pending"
    assert create(client, volume_body("uncord-explicit", [A, B, C], node=A))["task_status"] == "pending"


@pytest.mark.django_db(transaction=True)
def test_drain_moves_a_task_that_reserves_capacity_within_the_target_free_capacity(
    client: Client, fleet: Cluster
) -> None:
    """Outside any test transaction, as a real request runs: the move of a task that needs capacity locks
    the nodes (no 500), and lands only where the capacity is free."""
    for name, slots in ((A, 2), (B, 1), (C, 2)):
        Node.objects.filter(name=name).update(capacity={"slots": slots})
    Node.objects.filter(name=C).update(scheduling="cordoned")
    held = create(client, volume_body("held", [A, B, C], node=B, constraints={"capacity": {"slots": 1}}))
    assert held["node"] == B and held["task_status"] == "pending"  # B's only slot
    moving = [
        create(client, volume_body(f"mv{i}", [A, B, C], node=A, constraints={"capacity": {"slots": 1}}))
        for i in range(2)
    ]
    assert [m["task_status"] for m in moving] == ["pending", "pending"]

    resp = client.post(f"/api/v1/nodes/{A}/drain/")
    assert resp.status_code == 200, resp.content
    report = resp.json()
    # B is full and C cordoned: nothing may take them, and they stay, saying why.
    assert report["moved"] == [] and len(report["stayed"]) == 2, report
    assert all(f"{B}: slots: needs 1, 0 of 1 free" in s["reason"] for s in report["stayed"]), report
    client.post(f"/api/v1/nodes/{C}/uncordon/")
    report = client.post(f"/api/v1/nodes/{A}/drain/").json()  # safe to repeat: now C has two free slots
    assert sorted(m["to"] for m in report["moved"]) == [C, C], report
    assert GlobalTask.objects.filter(node=C, task_status="pending").count() == 2
    nodes = {n["name"]: n for n in client.get("/api/v1/nodes/").json()}
    assert nodes[C]["reserved"] == {"slots": 2} and nodes[C]["free"] == {"slots": 0}
    assert nodes[A]["reserved"] == {} and nodes[A]["drained"] is True


def test_the_unschedulable_message_of_one_candidate_says_it_cannot_take_it(fleet: Cluster) -> None:
    Node.objects.filter(name=A).update(scheduling="cordoned")
    task = task_create(task_type="noop", task_data={"node": A}, execute=True)[0]
    message = unschedulable(task.task_id)
    assert message.startswith("unschedulable: its only candidate cannot take it"), message
    assert f"{A}: cordoned" in message


# --- 4. drain, end to end ---------------------------------------------------------------------------------

E1, E2, E3 = (f"fd{RUN}-n{i}" for i in (1, 2, 3))
PREFIX = f"taskhub-test:fd{RUN}:updates"


class Procs:
    """A writer, the scheduler and node workers on loopback, sharing this test's database and broker."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_url: str = celery_app.conf.broker_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(
            os.environ,
            REDIS_URL=self.redis_url,
            CELERY_BROKER_URL=self.redis_url,
            TASKHUB_STREAM_PREFIX=PREFIX,
            TASKHUB_HANDLER_MODULES="tests.handlers_for_tests,tests.fleet_handlers",
            TASKHUB_HEARTBEAT_SECONDS="1",
            # Long enough that the scheduler never calls the node without a worker dead (it would move
            # its tasks itself): what moves them here is the drain.
            TASKHUB_NODE_OFFLINE_SECONDS="300",
            TASKHUB_DISPATCH_GRACE_SECONDS="1",
            TASKHUB_SWEEP_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )

    def data_dir(self, node: str) -> Path:
        return self.tmp / "nodes" / node

    def start_node(self, node: str) -> None:
        env = {k: v for k, v in self.env.items() if k != "DATABASE_URL"}  # a node has the broker only
        args = [node, "--data-dir", str(self.data_dir(node)), "--concurrency", "2", "--loglevel", "INFO"]
        self.procs[node] = start_node_worker(args, env, self.tmp / f"{node}.log")

    def start_server_side(self, name: str, args: list[str]) -> None:
        self.procs[name] = start_manage(args, dict(self.env, DATABASE_URL=database_url()), self.tmp / f"{name}.log")

    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def alive(self, node: str) -> bool:
        return bool(self.broker().exists(f"{PREFIX}:alive:{node}"))

    def queued_runs(self, node: str) -> list[str]:
        raw: list[bytes] = self.broker().lrange(node_queue(node), 0, -1)  # type: ignore[assignment]
        return [json.loads(m)["headers"]["id"] for m in raw]

    def idle(self, node: str) -> bool:
        """Nothing waits in the node's queue, and nothing it took is unacknowledged."""
        if self.broker().llen(node_queue(node)):
            return False
        unacked: list[bytes] = self.broker().hvals("unacked")  # type: ignore[assignment]
        return not any(f'"{node_queue(node)}"]'.encode() in raw for raw in unacked)

    def runs(self, node: str, task_id: str) -> list[str]:
        log = self.data_dir(node) / f"runs-{task_id}.log"
        return log.read_text().splitlines() if log.exists() else []

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)


@pytest.fixture
def procs(tmp_path: Path, settings: Any, transactional_db: None) -> Iterator[Procs]:
    p = Procs(tmp_path)
    settings.TASKHUB_STREAM_PREFIX = PREFIX
    settings.REDIS_URL = p.redis_url
    settings.TASKHUB_NODE_OFFLINE_SECONDS = 300
    cluster = cluster_ensure(name=CLUSTER)
    for node in (E1, E2, E3):
        node_register(cluster=cluster, name=node)
    try:
        p.start_server_side("writer", ["run_writer"])
        p.start_server_side("scheduler", ["run_scheduler"])
        p.start_node(E1)
        p.start_node(E3)
        yield p
    except AssertionError:
        print(p.logs())
        raise
    finally:
        p.stop_all()
        client = p.broker()
        for pattern in (f"{PREFIX}*", f"*fd{RUN}*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)


def spread(client: Client, nodes: list[str], **extra: Any) -> dict[str, Any]:
    return create(client, {"task_type": "fleet_spread", "task_data": {"nodes": nodes}, **extra})


def wait_status(task_id: str, status: str, timeout: float = 20) -> GlobalTask:
    def reached() -> GlobalTask | None:
        task = GlobalTask.objects.get(pk=task_id)
        return task if task.task_status == status else None

    found: GlobalTask = wait_until(reached, timeout, f"task {task_id} to be {status}", interval=0.2)
    return found


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_drain_moves_pending_work_to_live_nodes_end_to_end(client: Client, procs: Procs) -> None:
    wait_until(lambda: procs.alive(E1) and procs.alive(E3), 40, "the node workers of E1 and E3 to heartbeat")
    wait_until(
        lambda: Node.objects.filter(name__in=(E1, E3), last_heartbeat__isnull=False).count() == 2,
        15,
        "their heartbeats to reach the table",
    )
    # On E2, whose worker is not running: published, and nobody takes them.
    stuck = [spread(client, [E1, E2, E3], node=E2) for _ in range(3)]
    ids = [t["task_id"] for t in stuck]
    assert all((t["node"], t["placement"]["rule"], t["task_status"]) == (E2, "explicit", "pending") for t in stuck)
    old_runs = {t["task_id"]: t["run_id"] for t in stuck}
    wait_until(lambda: set(old_runs.values()) <= set(procs.queued_runs(E2)), 10, "their messages in E2's queue")
    assert set(GlobalTask.objects.filter(pk__in=ids).values_list("task_status", flat=True)) == {"pending"}

    resp = client.post(f"/api/v1/nodes/{E2}/drain/")
    assert resp.status_code == 200, resp.content
    report = resp.json()
    assert (report["node"], report["stayed"], report["running"]) == (E2, [], [])
    moved = {m["task_id"]: m["to"] for m in report["moved"]}
    assert set(moved) == set(ids) and set(moved.values()) <= {E1, E3}, report
    assert Node.objects.get(name=E2).scheduling == "draining"

    for task_id, to in moved.items():
        done = wait_status(task_id, "completed")
        assert done.node == to and done.run_id != old_runs[task_id]
        assert done.task_status_data["ran_on"] == to, done.task_status_data
        assert procs.runs(to, task_id) == [to]  # it really ran there, once
        rows = history(task_id)
        assert [t for _, t, _ in rows] == ["pending", "pending", "received", "in_progress", "completed"]
        moved_from, moved_to, source = rows[1]
        assert (moved_from, moved_to) == ("pending", "pending")
        assert f"drain of {E2}" in source and f"moved to {to}" in source and "/drain/" in source, source
        assert done.placement["moves"][-1]["from"] == E2 and done.placement["moves"][-1]["to"] == to
    drained = client.get(f"/api/v1/nodes/{E2}/").json()
    assert (drained["scheduling"], drained["unfinished_tasks"], drained["drained"]) == ("draining", 0, True)

    # E2's worker comes up: the voided runs still in its queue never run, and nothing new is given to it,
    # although it is now the least loaded and the first candidate.
    procs.start_node(E2)
    wait_until(lambda: procs.alive(E2), 40, "E2's worker to heartbeat")
    wait_until(lambda: Node.objects.filter(name=E2, last_heartbeat__isnull=False).exists(), 15, "E2's heartbeat")
    wait_until(lambda: procs.idle(E2), 20, "E2 to be done with its old queue")
    assert all(procs.runs(E2, task_id) == [] for task_id in ids)
    assert set(GlobalTask.objects.filter(pk__in=ids).values_list("task_status", flat=True)) == {"completed"}
    avoided = spread(client, [E2, E1, E3])
    assert avoided["node"] in (E1, E3), avoided["placement"]
    assert {"node": E2, "passed_over": "draining"} in avoided["placement"]["candidates"]
    wait_status(avoided["task_id"], "completed")

    resp = client.post(f"/api/v1/nodes/{E2}/uncordon/")
    assert resp.status_code == 200 and resp.json()["scheduling"] == "schedulable"
    back = spread(client, [E2, E1, E3])
    assert back["node"] == E2, back["placement"]
    wait_status(back["task_id"], "completed")
    assert procs.runs(E2, back["task_id"]) == [E2]


# --- 5. capacity under concurrent creates -----------------------------------------------------------------


@pytest.fixture
def gunicorn(child_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The web app as deployed (gunicorn.conf.py): two processes of eight threads, on this test's database."""
    port = free_port()
    env = {k: v for k, v in child_env.items() if k not in ("GUNICORN_CMD_ARGS", "GUNICORN_THREADS")}
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2", GUNICORN_THREADS="8")
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn(env, log, base_url)
    try:
        yield base_url
    except AssertionError:
        print(log.read_text(errors="replace")[-5000:])
        raise
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_capacity_is_never_exceeded_under_concurrent_creates(
    client: Client, operator_token: str, gunicorn: str
) -> None:
    cluster = cluster_ensure(name=CLUSTER)
    for name in (A, B, C):
        node_register(cluster=cluster, name=name)
        Node.objects.filter(name=name).update(capacity={"slots": 3}, last_heartbeat=datetime.now(UTC))
    headers = {"Authorization": f"Token {operator_token}"}
    need = {"capacity": {"slots": 1}}

    def create_over_http(i: int) -> str:
        # No database here: these threads only talk HTTP (a connection opened here would outlive the test).
        body = volume_body(f"cap{i}", [A, B, C], constraints=need)
        resp = httpx.post(f"{gunicorn}{TASKS}", json=body, headers=headers, timeout=60)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["task_id"])

    def created(i: int) -> GlobalTask:
        return GlobalTask.objects.get(pk=create_over_http(i))

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            ids = list(pool.map(create_over_http, range(40)))
        made = list(GlobalTask.objects.filter(pk__in=ids))
        assert len(made) == 40
        assert Counter(t.task_status for t in made) == {"pending": 9, "failed": 31}

        tasks = GlobalTask.objects.filter(task_type="volume_create")
        assert tasks.count() == 40
        holding = Counter(tasks.filter(task_status__in=UNFINISHED).values_list("node", flat=True))
        assert holding == {A: 3, B: 3, C: 3}, holding
        assert all(t.constraints == need for t in tasks)
        for failed in tasks.filter(task_status="failed"):
            message = unschedulable(failed.task_id)
            assert all(f"{n}: slots: needs 1, 0 of 3 free" in message for n in (A, B, C)), message
        listed = client.get("/api/v1/nodes/", {"cluster__name": CLUSTER}).json()
        rows = {n["name"]: n for n in (listed["results"] if isinstance(listed, dict) else listed)}
        for name in (A, B, C):
            assert (rows[name]["capacity"], rows[name]["reserved"], rows[name]["free"]) == (
                {"slots": 3}, {"slots": 3}, {"slots": 0}
            ), rows[name]  # fmt: skip
            assert rows[name]["unfinished_tasks"] == 3

        # A task that ends gives its slot back: the next create is placed there, the only node with room.
        done = tasks.filter(node=B, task_status="pending").order_by("created_ns").first()
        assert done is not None
        complete_volume(done.task_id)
        assert client.get(f"/api/v1/nodes/{B}/").json()["free"] == {"slots": 1}
        again = created(100)
        assert (again.node, again.task_status) == (B, "pending"), again.placement
        assert client.get(f"/api/v1/nodes/{B}/").json()["free"] == {"slots": 0}
        assert created(101).task_status == "failed"
    finally:
        drop_queues(A, B, C)


# --- 6. a node's lifecycle: PATCH and DELETE --------------------------------------------------------------


def test_patch_stores_labels_and_capacity_and_names_a_bad_field(client: Client, fleet: Cluster) -> None:
    resp = patch(client, f"/api/v1/nodes/{A}/", {"labels": {"disk": "ssd", "zone": "a"}, "capacity": {"slots": 4}})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["labels"], body["capacity"], body["free"]) == (
        {"disk": "ssd", "zone": "a"},
        {"slots": 4},
        {"slots": 4},
    )
    node = Node.objects.get(name=A)
    assert (node.labels, node.capacity) == ({"disk": "ssd", "zone": "a"}, {"slots": 4})
    # Each field replaces the whole: new labels drop the old ones, and capacity is left alone.
    assert patch(client, f"/api/v1/nodes/{A}/", {"labels": {"disk": "hdd"}}).status_code == 200
    node.refresh_from_db()
    assert (node.labels, node.capacity) == ({"disk": "hdd"}, {"slots": 4})

    for bad, field in (
        ({"labels": {"disk": 5}}, "labels"),
        ({"labels": ["disk"]}, "labels"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"capacity": {"slots": -1}}, "capacity"),
        ({"capacity": {"Slots": 1}}, "capacity"),
        ({"capacity": {"slots": "4"}}, "capacity"),
        ({"scheduling": "cordoned"}, "scheduling"),
    ):
        resp = patch(client, f"/api/v1/nodes/{A}/", bad)
        assert resp.status_code == 400, (bad, resp.content)
        assert field in resp.json(), (bad, resp.json())
    node.refresh_from_db()
    assert (node.labels, node.capacity, node.scheduling) == ({"disk": "hdd"}, {"slots": 4}, "schedulable")


def test_delete_is_refused_while_a_node_has_work_or_holds_a_unit(
    client: Client, fleet: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("create_node_token", A)
    key = capsys.readouterr().out.strip()
    node_client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert node_client.get(f"/api/v1/tasks/{CLUSTER}/{A}").status_code == 200
    user = Node.objects.get(name=A).user
    assert user is not None

    work = task_create(task_type="noop", task_data={"node": A}, execute=True)[0]
    resp = client.delete(f"/api/v1/nodes/{A}/")
    assert resp.status_code == 409, resp.content
    body = resp.json()
    assert body["unfinished_tasks"] == [f"task {work.task_id} (noop, pending)"] and body["holds"] == [], body
    assert A in body["detail"] and "unfinished task" in body["detail"]
    node_report(work.task_id, "completed", {})

    vol = create(client, volume_body("held", [A, B], node=A))
    resp = client.delete(f"/api/v1/nodes/{A}/")
    assert resp.status_code == 409 and resp.json()["unfinished_tasks"] == [
        f"task {vol['task_id']} (volume_create, pending)"
    ]
    complete_volume(vol["task_id"])
    resp = client.delete(f"/api/v1/nodes/{A}/")
    assert resp.status_code == 409, resp.content
    body = resp.json()
    assert body["unfinished_tasks"] == [] and len(body["holds"]) == 1 and "volume(s) held" in body["holds"][0], body
    assert Node.objects.filter(name=A).exists() and User.objects.filter(pk=user.pk).exists()

    gone = task_create(task_type="volume_delete", task_data={"cluster": CLUSTER, "name": "held"}, execute=True)[0]
    node_report(gone.task_id, "completed", {"volume": "held", "deleted": True})
    assert not Volume.objects.filter(name="held").exists()
    resp = client.delete(f"/api/v1/nodes/{A}/")
    assert resp.status_code == 204, resp.content
    assert not Node.objects.filter(name=A).exists()
    assert not User.objects.filter(pk=user.pk).exists() and not Token.objects.filter(key=key).exists()
    assert node_client.get(f"/api/v1/tasks/{CLUSTER}/{A}").status_code == 401
    assert GlobalTask.objects.get(pk=work.task_id).node == A  # its finished tasks keep its name
    assert client.get(f"/api/v1/nodes/{A}/").status_code == 404
    assert client.delete(f"/api/v1/nodes/{A}/").status_code == 404
