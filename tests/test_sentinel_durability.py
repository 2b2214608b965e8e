"""Durability you choose knowingly (issue 9): what an acknowledged POST /task_update survives.

Every test here runs Redis processes of its own on free loopback ports (never the shared Redis, which other
runs use), without persistence, and stops them all:
  - `make run`'s private Redis keeps the append-only file, fsynced every second, under var/;
  - with TASKHUB_UPDATE_WAIT_REPLICAS a 200 means a replica holds the update (Redis WAIT), and a replica
    that cannot confirm it turns the answer into a 503 that says the update may still be applied;
  - through Redis Sentinel (a primary, a replica and one sentinel), the primary is SIGKILLed under a loop
    of real POST /task_update requests and the sentinel promotes the replica; then the acknowledged
    updates missing from the new primary's stream are counted. With the replica wait none may be missing.
    Without it the count is printed, not asserted: it depends on how far the replica lagged.
  - Celery's sentinel:// transport, configured by the settings from REDIS_URL alone, publishes to the
    primary the sentinel names, before and after a failover.

How the replica is made to lag, as a network partition would: it is frozen (SIGSTOP) until the primary
drops its link (repl-timeout 1 s); with min-replicas-to-write 0 (Redis's default) the primary keeps
acknowledging writes that only it holds. Then the primary is killed and the replica thawed, and the
sentinel (down-after-milliseconds 500) fails over to it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client
from redis.sentinel import Sentinel

from taskhub import devstack
from tasks_app.tasks.stream import read_after
from tests.conftest import ROOT
from tests.helpers import wait_until
from workers.protocol import keys, redis_url

pytestmark = pytest.mark.django_db

MASTER = "taskhub-test"
# A liveness bound for one phase of a failover, not a speed target: the sentinel needs 0.5 s to call the
# primary down and about a second more to promote the replica; a loaded machine gets the rest.
FAILOVER_BOUND = 30.0
# How long POST /task_update waits for a replica: long enough that a replica in sync acknowledges in time
# on a loaded machine (200 ms did not, once, in a full make test run), short enough to keep the run quick.
WAIT_MS = 2000
# Requests sent after the failover: enough to see where they go.
AFTER_FAILOVER = 10


def _client(port: int) -> Any:  # redis-py's sync/async union return types are of no help here
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)


def _answers(port: int) -> bool:
    try:
        return bool(_client(port).ping())
    except redis.RedisError:
        return False


class Servers:
    """redis-server processes on loopback, each in a directory of its own; all stopped by close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, *args: str, sentinel: bool = False) -> int:
        port = devstack.free_port()
        data = self.root / name
        data.mkdir(parents=True)
        if sentinel:
            # A sentinel rewrites its configuration file as it learns the topology, so it gets one.
            conf = data / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {data}\n" + "".join(f"{line}\n" for line in args))
            argv = [devstack.redis_server_binary(), str(conf), "--sentinel"]
        else:
            argv = [devstack.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
                    "--save", "", "--appendonly", "no", *args]  # fmt: skip
        with (data / "log").open("wb") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ports[name] = port
        wait_until(lambda: _answers(port), 10, f"redis {name} to answer")
        return port

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a frozen process dies of SIGKILL too, but thaw it to be sure
            proc.kill()
            proc.wait()

    def log(self, name: str) -> str:
        return (self.root / name / "log").read_text(errors="replace")[-3000:]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    group = Servers(tmp_path / "redis")
    try:
        yield group
    finally:
        group.close()


def start_primary_and_replica(servers: Servers) -> tuple[int, int]:
    # repl-timeout 1: the primary drops a replica silent for a second (the partition below). No diskless
    # sync delay: the replica's first sync would otherwise wait 5 s for more replicas to join.
    primary = servers.start("primary", "--repl-timeout", "1", "--repl-diskless-sync-delay", "0",
                            "--min-replicas-to-write", "0")  # fmt: skip
    replica = servers.start("replica", "--replicaof", "127.0.0.1", str(primary), "--repl-diskless-sync-delay", "0")
    wait_until(
        lambda: _client(replica).info("replication").get("master_link_status") == "up",
        10,
        "the replica to sync with the primary",
    )
    return primary, replica


def start_sentinel(servers: Servers, primary: int) -> int:
    # After the replica is in sync: the sentinel learns replicas from the primary's INFO, which it reads at
    # once and then every 10 s. Quorum 1 of 1 sentinel; down after 0.5 s of silence.
    port = servers.start(
        "sentinel",
        f"sentinel monitor {MASTER} 127.0.0.1 {primary} 1",
        f"sentinel down-after-milliseconds {MASTER} 500",
        f"sentinel failover-timeout {MASTER} 3000",
        sentinel=True,
    )
    wait_until(lambda: _client(port).sentinel_master(MASTER)["num-slaves"] >= 1, 10, "the sentinel to see the replica")
    return port


def current_primary(sentinel: int) -> int:
    """The primary's port as redis-py's Sentinel client finds it (what taskhub's client connects to): from
    a sentinel that names it and no longer flags it down. 0 while there is none."""
    try:
        lookup: Any = Sentinel([("127.0.0.1", sentinel)], socket_timeout=1)  # type: ignore[no-untyped-call]
        return int(lookup.discover_master(MASTER)[1])
    except redis.RedisError:  # MasterNotFoundError: mid-failover
        return 0


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def create_tasks(client: Client, count: int) -> list[str]:
    """Tracked tasks (no node), in_progress: an in_progress update with fresh data is always accepted."""
    ids = []
    for _ in range(count):
        resp = post(client, "/task", {"task_type": "t", "task_status": "in_progress"})
        assert resp.status_code == 200, resp.content
        ids.append(str(resp.json()["data"]["task_id"]))
    return ids


def seqs_in_stream() -> set[int]:
    """The `seq` of every update in the stream, as REDIS_URL's primary (so the sentinel's) holds it."""
    seen: set[int] = set()
    for shard in range(keys.shard_count()):
        for entry in read_after(shard, "0-0", 1_000_000):
            if entry.update is not None and entry.update.status_data is not None:
                seen.add(int(entry.update.status_data["seq"]))
    return seen


# --- make run's private Redis -----------------------------------------------------------------------


def test_make_runs_private_redis_keeps_an_append_only_file_in_var(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc, url = devstack.start_private_redis(var)
    try:
        client: Any = redis.Redis.from_url(url, socket_timeout=2, decode_responses=True)
        config = client.config_get("appendonly") | client.config_get("appendfsync") | client.config_get("dir")
        assert config == {"appendonly": "yes", "appendfsync": "everysec", "dir": str(var / "redis")}
        assert (var / "redis").stat().st_mode & 0o777 == 0o700  # accepted updates: ours alone
    finally:
        proc.kill()
        proc.wait()


# --- the replica wait, primary and replica ------------------------------------------------------------


def test_the_replica_wait_answers_200_once_a_replica_holds_the_update_and_503_when_none_can(
    client: Client, settings: Any, servers: Servers
) -> None:
    primary, replica = start_primary_and_replica(servers)
    settings.REDIS_URL = f"redis://127.0.0.1:{primary}/0"
    settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
    settings.TASKHUB_UPDATE_WAIT_REPLICAS = 1
    settings.TASKHUB_UPDATE_WAIT_MS = WAIT_MS
    [task_id] = create_tasks(client, 1)
    stream = keys.stream_key(keys.shard_for(task_id))

    resp = post(client, "/task_update", {"task_id": task_id, "status": "in_progress", "task_status_data": {"seq": 1}})
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True, "message": "Task update pushed successfully"}
    # Acknowledged by the replica: it is there already, not on its way.
    [(_, fields)] = _client(replica).xrange(stream)
    assert json.loads(fields[b"data"]) == {"seq": 1}

    servers.signal("replica", signal.SIGKILL)
    servers.procs["replica"].wait()
    resp = post(client, "/task_update", {"task_id": task_id, "status": "in_progress", "task_status_data": {"seq": 2}})
    assert resp.status_code == 503, resp.content
    assert resp["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)
    assert resp.json() == {
        "success": False,
        "message": f"Task update not confirmed: 0 of 1 replica(s) acknowledged it within {WAIT_MS} ms. It is "
        "queued on the Redis primary and may still be applied, but a failover now would lose it; sending the "
        "same update again is safe",
    }
    # As the message says: on the primary, where a writer would apply it.
    assert [json.loads(f[b"data"]) for _, f in _client(primary).xrange(stream)] == [{"seq": 1}, {"seq": 2}]


# --- a failover under load, through Sentinel ------------------------------------------------------------


class Partition(threading.Thread):
    """Once `go` is set: freeze the replica until the primary drops it, let the primary acknowledge alone
    for a moment, SIGKILL it, thaw the replica, and wait for the sentinel to promote it. Plain Redis
    clients only: the request loop owns the database connection."""

    def __init__(self, servers: Servers, sentinel: int) -> None:
        super().__init__(daemon=True)
        self.servers, self.sentinel = servers, sentinel
        self.go, self.killed, self.failed_over = threading.Event(), threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            primary, replica = self.servers.ports["primary"], self.servers.ports["replica"]
            assert self.go.wait(FAILOVER_BOUND), "the load never started"
            self.servers.signal("replica", signal.SIGSTOP)
            wait_until(
                lambda: _client(primary).info("replication")["connected_slaves"] == 0,
                FAILOVER_BOUND,
                "the primary to drop its frozen replica",
                interval=0.05,
            )
            time.sleep(0.3)
            self.servers.signal("primary", signal.SIGKILL)
            self.servers.procs["primary"].wait()
            self.killed.set()
            self.servers.signal("replica", signal.SIGCONT)
            wait_until(lambda: current_primary(self.sentinel) == replica, FAILOVER_BOUND, "the sentinel's failover")
            self.failed_over.set()
        except BaseException as exc:  # reported by the test, which waits for this thread
            self.error = exc
            self.killed.set()
            self.failed_over.set()


@pytest.mark.parametrize("replica_wait", [True, False], ids=["replica_wait", "no_wait"])
def test_a_failover_under_load_loses_no_acknowledged_update_with_the_replica_wait(
    client: Client, settings: Any, servers: Servers, replica_wait: bool
) -> None:
    primary, replica = start_primary_and_replica(servers)
    sentinel = start_sentinel(servers, primary)
    settings.REDIS_URL = f"sentinel://127.0.0.1:{sentinel}/0"
    settings.TASKHUB_REDIS_SENTINEL_MASTER = MASTER
    settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
    settings.TASKHUB_UPDATE_WAIT_REPLICAS = 1 if replica_wait else 0
    settings.TASKHUB_UPDATE_WAIT_MS = WAIT_MS
    tasks = create_tasks(client, 8)  # over several shards

    partition = Partition(servers, sentinel)
    partition.start()
    acked: list[int] = []
    acked_after_kill: list[int] = []
    refused: dict[str, int] = {}  # 503 message kind -> count
    after_failover: list[tuple[int, Any]] = []
    seq = 0
    deadline = time.monotonic() + 3 * FAILOVER_BOUND
    while len(after_failover) < AFTER_FAILOVER and time.monotonic() < deadline:
        seq += 1
        # Read before the request: its answer is then the new primary's (or, once killed, not the old one's).
        killed, failed_over = partition.killed.is_set(), partition.failed_over.is_set()
        body = {"task_id": tasks[seq % len(tasks)], "status": "in_progress", "task_status_data": {"seq": seq}}
        resp = post(client, "/task_update", body)
        answer = resp.json()
        if resp.status_code == 200:
            assert answer == {"success": True, "message": "Task update pushed successfully"}
            acked.append(seq)
            if killed:
                acked_after_kill.append(seq)
        else:
            assert resp.status_code == 503, resp.content
            assert answer["success"] is False and resp["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)
            kind = answer["message"].split(":")[0]
            refused[kind] = refused.get(kind, 0) + 1
            time.sleep(0.005)
        if failed_over:
            after_failover.append((resp.status_code, answer["message"]))
        if len(acked) >= 200:
            partition.go.set()
    partition.join(FAILOVER_BOUND)
    assert partition.error is None, f"{partition.error}\n{servers.log('sentinel')}"
    assert len(after_failover) == AFTER_FAILOVER, "the load loop ran out of time"
    assert current_primary(sentinel) == replica

    present = seqs_in_stream()  # through the sentinel: the promoted replica's stream
    lost = sorted(set(acked) - present)
    print(
        f"\n{'with' if replica_wait else 'without'} the replica wait: {len(acked)} updates acknowledged, "
        f"{len(lost)} of them lost in the failover; 503s: {refused}"
    )
    assert len(acked) >= 200  # the loss counted is of a real load, before the partition
    assert set(acked_after_kill) <= present  # what the new primary acknowledged, it holds
    if replica_wait:
        assert lost == []
        # The promoted replica has no replica of its own: it queues updates but cannot confirm them.
        assert {status for status, _ in after_failover} == {503}
        assert all("0 of 1 replica(s) acknowledged" in message for _, message in after_failover), after_failover
    else:
        # Writes reach the new primary, which answers 200 alone.
        assert {status for status, _ in after_failover} == {200}
        assert acked_after_kill


# --- Celery's Sentinel transport ---------------------------------------------------------------------

PUBLISH = """
import os, sys
import django
django.setup()
from django.conf import settings
from taskhub.celery import app
assert settings.CELERY_BROKER_URL == sys.argv[1], settings.CELERY_BROKER_URL
assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] == sys.argv[2]
app.send_task("taskhub.test.probe", args=[sys.argv[3]], queue="taskhub-test-probe")
"""


def publish(sentinel: int, mark: str) -> None:
    """Publish one Celery message from a server process configured by REDIS_URL (a sentinel:// URL) and
    TASKHUB_REDIS_SENTINEL_MASTER alone: no CELERY_BROKER_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="taskhub.settings",
        REDIS_URL=f"sentinel://127.0.0.1:{sentinel}/0",
        TASKHUB_REDIS_SENTINEL_MASTER=MASTER,
    )
    expected_broker = f"sentinel://127.0.0.1:{sentinel}/0"
    done = subprocess.run(
        [sys.executable, "-c", PUBLISH, expected_broker, MASTER, mark],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def queued_marks(port: int) -> list[str]:
    """The mark of each message in the probe queue, newest first (kombu LPUSHes). A message's body is
    base64 JSON [args, kwargs, embed]."""
    raws = _client(port).lrange("taskhub-test-probe", 0, -1)
    return [str(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]) for raw in raws]


def test_celery_publishes_through_the_sentinel_to_the_current_primary(servers: Servers) -> None:
    primary, replica = start_primary_and_replica(servers)
    sentinel = start_sentinel(servers, primary)
    publish(sentinel, "before")
    assert queued_marks(primary) == ["before"]
    # Replication is asynchronous: the replica holds the first message before the primary goes.
    wait_until(lambda: queued_marks(replica) == ["before"], 10, "the replica to have the first message")

    servers.signal("primary", signal.SIGKILL)
    servers.procs["primary"].wait()
    wait_until(lambda: current_primary(sentinel) == replica, FAILOVER_BOUND, "the sentinel's failover")
    publish(sentinel, "after")
    # The replica had the first message already; the second went to it as the new primary.
    assert queued_marks(replica) == ["after", "before"]


# --- parsing -------------------------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_database_and_credentials() -> None:
    target = redis_url.parse_sentinel("sentinel://app:p%40ss@10.0.0.1:26380,[::1],s3/2")
    assert target == redis_url.SentinelTarget(
        sentinels=(("10.0.0.1", 26380), ("::1", 26379), ("s3", 26379)), db=2, username="app", password="p@ss"
    )
    assert redis_url.celery_broker_url("sentinel://:pw@a:1,b:2/3") == "sentinel://:pw@a:1/3;sentinel://:pw@b:2/3"
    assert redis_url.celery_broker_url("redis://h:6379/0") == "redis://h:6379/0"
    with pytest.raises(ValueError, match="at least one sentinel"):
        redis_url.parse_sentinel("sentinel:///0")
