"""A finished run is always reported: a node's outbox (workers/node/outbox.py) keeps every report on
disk until the update stream has it, the sender (workers/node/sender.py) resends through a Redis outage
and after a node restart, and the writer makes a resent report harmless.

Redis is killed and restarted here, so these tests run their own redis-server on a free loopback port
(never the shared one); only the writer test uses the shared test Redis, under a prefix of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from taskhub import devstack
from tests.conftest import MANAGE, ROOT, PrivateRedis, database_url
from tests.helpers import start_manage, start_node_worker, stop, wait_until
from workers.node import outbox as outboxes
from workers.node import sender
from workers.node.outbox import Outbox
from workers.node.reporter import report
from workers.protocol import keys, run_end
from workers.protocol.messages import Origin, StatusUpdate, decode_entry
from workers.protocol.stream import push_updates


@pytest.fixture
def node(settings: Any, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[Path]:
    """This process as node n1 on the private Redis: its data dir's bookkeeping dir, where the outbox is."""
    settings.REDIS_URL = private_redis.url
    settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
    settings.TASKHUB_NODE_NAME = "n1"
    settings.TASKHUB_NODE_DATA_DIR = str(tmp_path / "n1")
    yield tmp_path / "n1" / ".taskhub"
    sender.stop_all(timeout=2)


def entries(client: redis.Redis) -> int:
    lengths: list[Any] = [client.xlen(keys.stream_key(shard)) for shard in range(keys.shard_count())]
    return sum(int(n) for n in lengths)


def said(client: redis.Redis) -> dict[str, list[tuple[str, str, Any]]]:
    """What the stream holds, per task, in the order Redis took it, as the writers apply it (folded
    reports unfolded, workers/node/sender.py: fold): (run, status, data), as_applied. One task's
    updates share a shard, whose order is the order the writers apply them."""
    per_task: dict[str, list[tuple[str, str, Any]]] = {}
    for shard in range(keys.shard_count()):
        rows: list[Any] = client.xrange(keys.stream_key(shard))  # type: ignore[assignment]
        for sid, fields in rows:
            entry = decode_entry(sid, fields).update
            assert entry is not None and entry.origin is Origin.NODE and entry.source == "node:n1"
            assert entry.at is not None and all(at <= entry.at for _, at in entry.steps)
            for u in entry.unfolded():
                per_task.setdefault(u.task_id, []).append((u.run_id, u.status, u.status_data))
    return {task_id: as_applied(steps) for task_id, steps in per_task.items()}


def made(reports: list[tuple[str, str, str, Any]]) -> dict[str, list[tuple[str, str, Any]]]:
    per_task: dict[str, list[tuple[str, str, Any]]] = {}
    for task_id, run_id, status, data in reports:
        per_task.setdefault(task_id, []).append((run_id, status, data))
    return {task_id: as_applied(steps) for task_id, steps in per_task.items()}


def as_applied(steps: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """What a task ends up with from these steps, whether or not they were folded: each change of
    status in order (a repeated status is one step), and the last step's data."""
    out: list[tuple[str, str, Any]] = []
    for run_id, status, data in steps:
        if out and out[-1][:2] == (run_id, status):
            out.pop()
        out.append((run_id, status, data))
    return [(run_id, status, None) for run_id, status, _ in out[:-1]] + out[-1:]


# Two runs, interleaved as a node's threads would report them.
REPORTS = [
    ("t1", "run-1", "received", None),
    ("t2", "run-2", "received", None),
    ("t1", "run-1", "in_progress", {"node": "n1", "attempt": 0}),
    ("t2", "run-2", "in_progress", {"node": "n1", "attempt": 0}),
    ("t1", "run-1", "in_progress", {"node": "n1", "progress": {"percent": 50.0, "message": "half"}}),
    ("t1", "run-1", "completed", {"result": 1, "node": "n1"}),
    ("t2", "run-2", "failed", {"error": {"type": "HandlerError", "message": "boom", "node": "n1"}}),
]


def test_reports_made_while_redis_is_down_wait_in_the_outbox_and_arrive_in_order(
    node: Path, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    private_redis.kill()
    for task_id, run_id, status, data in REPORTS:
        report(task_id, run_id, status, "n1", data)  # returns: nothing on this path waits for Redis
    box = outboxes.at(node)
    # The sender has tried, failed, and kept them all.
    wait_until(lambda: "reports wait in the outbox" in caplog.text, 10, "the sender to meet the outage")
    kept = [(p.update.task_id, p.update.status, p.update.status_data) for p in box.pending()]
    assert kept == [(t, s, d) for t, _, s, d in REPORTS]
    assert box.pending_runs() == {"run-1", "run-2"}
    assert all(p.update.origin is Origin.NODE and p.update.source == "node:n1" for p in box.pending())

    private_redis.start()  # the same port, empty: whatever it held before is gone
    client = private_redis.client()
    wait_until(lambda: not box.pending(), 30, "the outbox to empty once Redis is back")
    # Each report exactly once, and each run's reports in the order they were made: sent together, each
    # run's as one entry that folds its steps.
    assert said(client) == made(REPORTS)
    assert entries(client) == 2


def test_a_report_this_version_cannot_read_is_set_aside_and_the_rest_go(
    node: Path, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # One unreadable row (another version's, or damaged) stopped the sender on it, and with it every report
    # of the node behind it: their runs were "undelivered" for good, so nothing recovered them either.
    box = outboxes.at(node)
    box._db.execute("INSERT INTO report (run_id, body) VALUES ('run-bad', '{\"task_id\": \"t0\"}')")
    newer = {
        "task_id": "t1",
        "status": "completed",
        "status_data": {"result": 1},
        "source": "node:n1",
        "run_id": "run-1",
        "origin": "node",
        "at": time.time(),
        "steps": [],
        "a_field_of_a_newer_version": 1,
    }
    box._db.execute("INSERT INTO report (run_id, body) VALUES ('run-1', ?)", (json.dumps(newer),))  # fmt: skip
    report("t2", "run-2", "failed", "n1", {"error": {"type": "HandlerError", "message": "boom"}})
    client = private_redis.client()
    wait_until(lambda: not box.pending(), 30, "the outbox to empty")
    assert said(client) == {
        "t1": [("run-1", "completed", {"result": 1})],  # its unknown field left out, not fatal
        "t2": [("run-2", "failed", {"error": {"type": "HandlerError", "message": "boom"}})],
    }
    assert box.unreadable() == [(1, "run-bad", "KeyError: 'origin'")]
    assert box.pending_runs() == set()
    assert "report 1 of run run-bad cannot be read" in caplog.text


def test_a_report_the_outbox_refuses_is_sent_directly_through_a_redis_blip(
    node: Path, private_redis: PrivateRedis
) -> None:
    # The disk refusing the report (here: the outbox closed under it) sent it straight to Redis, once: with
    # Redis away at that moment too, the outcome was lost and the error escaped into the caller.
    box = outboxes.at(node)
    box.close()
    private_redis.kill()
    restart = private_redis.restart_in(1.0)
    try:
        report("t1", "run-1", "completed", "n1", {"result": 1})
    finally:
        restart.join()
    assert said(private_redis.client()) == {"t1": [("run-1", "completed", {"result": 1})]}


def test_a_status_keeps_the_time_it_was_first_reported_when_folded() -> None:
    # Folded with the progress reports after it, a run's start took the last progress report's time: its
    # run time, its latency samples and its run timeout all counted from the wrong moment.
    t0 = 1_800_000_000.0
    reports = [
        ("received", t0, None),
        ("in_progress", t0 + 1, {"attempt": 0}),
        ("in_progress", t0 + 10, {"progress": {"percent": 50.0}}),
        ("in_progress", t0 + 19, {"progress": {"percent": 90.0}}),
        ("completed", t0 + 20, {"result": 1}),
    ]
    updates = [
        StatusUpdate("t1", status, data, source="node:n1", run_id="run-1", origin=Origin.NODE, at=at)
        for status, at, data in reports
    ]
    for end in range(2, len(updates) + 1):
        (entry,) = sender.fold(updates[:end])
        applied = [(u.status, u.at) for u in entry.unfolded()]
        firsts: dict[str, float] = {}
        for status, at, _ in reports[:end]:
            firsts.setdefault(status, at)
        assert [(status, at) for status, at in applied if firsts[status] == at] == list(firsts.items())
        assert applied[-1] == (reports[end - 1][0], reports[end - 1][1])  # the last one, with its data
        assert entry.status_data == reports[end - 1][2]


def test_reports_of_runs_the_server_ended_are_not_sent(node: Path, private_redis: PrivateRedis) -> None:
    run_end.mark("run-void", run_end.End.VOID)
    run_end.mark("run-cancel", run_end.End.CANCEL)
    report("tv", "run-void", "completed", "n1", {"result": 1})
    report("tc", "run-cancel", "in_progress", "n1", {"node": "n1"})
    report("tc", "run-cancel", "cancelled", "n1", {"node": "n1", "cancelled": {"stopped": "at a safe point"}})
    report("tk", "run-ok", "completed", "n1", {"result": 2})
    box = outboxes.at(node)
    wait_until(lambda: not box.pending(), 20, "the outbox to empty")
    # A voided run says nothing; a cancelled run only how it ended.
    assert said(private_redis.client()) == {
        "tc": [("run-cancel", "cancelled", {"node": "n1", "cancelled": {"stopped": "at a safe point"}})],
        "tk": [("run-ok", "completed", {"result": 2})],
    }


NODE_CRASHES = """
import os, signal
import django
django.setup()
from workers.node.reporter import report
for status in ("received", "in_progress", "completed"):
    report("t-crash", "run-crash", status, "n1", {"status": status})
os.kill(os.getpid(), signal.SIGKILL)  # the node dies with its reports undelivered
"""


def test_a_restarted_node_sends_what_it_had_not_delivered(
    settings: Any, node: Path, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    private_redis.kill()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="taskhub.settings_node",
        REDIS_URL=private_redis.url,
        CELERY_BROKER_URL=private_redis.url,
        TASKHUB_STREAM_PREFIX=settings.TASKHUB_STREAM_PREFIX,
        TASKHUB_NODE_NAME="n1",
        TASKHUB_NODE_DATA_DIR=str(tmp_path / "n1"),
    )
    crashed = subprocess.run([sys.executable, "-c", NODE_CRASHES], env=env, cwd=ROOT, timeout=60, check=False)
    assert crashed.returncode == -signal.SIGKILL
    left = Outbox(node / outboxes.FILENAME)
    assert [p.update.status for p in left.pending()] == ["received", "in_progress", "completed"]
    left.close()

    private_redis.start()
    sender.running(node)  # what a node worker does when it starts (workers/node/signals.py)
    box = outboxes.at(node)
    wait_until(lambda: not box.pending(), 30, "the restarted node to deliver")
    assert said(private_redis.client()) == made(
        [("t-crash", "run-crash", s, {"status": s}) for s in ("received", "in_progress", "completed")]
    )


# --- the writer: a resent report is harmless ----------------------------------------------------------


@pytest.mark.redis
@pytest.mark.django_db
def test_a_resent_batch_of_reports_changes_nothing(redis_stream: redis.Redis) -> None:
    """A batch whose XADDs Redis ran but whose answer was lost is sent again, whole and in order. The
    writer applies the repeats through the transition function, and they change nothing: no second
    history row, no record written twice, the result as first reported."""
    from tasks_app.fleet.models import BlockAllocation, Node
    from tasks_app.fleet.services import cluster_ensure, node_register
    from tasks_app.tasks.models import GlobalTask, TaskStatusChange
    from tasks_app.tasks.services import task_cancel, task_create
    from tasks_app.tasks.writer import run_once

    demo = cluster_ensure(name="demo")
    node_register(cluster=demo, name="node1")
    Node.objects.update(last_heartbeat=datetime.now(UTC))
    data = {"cluster": "demo", "node": "node1", "blocks": 2}
    alloc = task_create(task_type="block_alloc", task_data=data, execute=True)[0]
    stopped = task_create(task_type="noop", task_data={"node": "node1"}, execute=True)[0]

    def node_says(task: GlobalTask, status: str, data: dict[str, Any] | None = None) -> StatusUpdate:
        return StatusUpdate(task.task_id, status, data, source="node:node1", run_id=task.run_id, origin=Origin.NODE)

    def apply() -> None:
        while run_once():
            pass

    first = [
        node_says(alloc, "received"),
        node_says(alloc, "in_progress", {"node": "node1", "attempt": 0}),
        node_says(alloc, "in_progress", {"node": "node1", "progress": {"percent": 50.0, "message": ""}}),
        node_says(alloc, "completed", {"allocation_id": alloc.task_id, "node": "node1"}),
        node_says(stopped, "received"),
        node_says(stopped, "in_progress", {"node": "node1", "attempt": 0}),
    ]
    push_updates(first)
    apply()
    assert task_cancel(task_id=stopped.task_id, source="test").task_status == "cancelling"
    cancelled = node_says(stopped, "cancelled", {"node": "node1", "cancelled": {"stopped": "at a safe point"}})
    push_updates([cancelled])
    apply()
    before = {t: GlobalTask.objects.values().get(pk=t) for t in (alloc.task_id, stopped.task_id)}
    history = TaskStatusChange.objects.count()

    push_updates([*first, cancelled])  # the resend
    apply()

    assert TaskStatusChange.objects.count() == history
    for task_id, row in before.items():
        after = GlobalTask.objects.values().get(pk=task_id)
        assert (after["task_status"], after["task_status_data"]) == (row["task_status"], row["task_status_data"])
    # The progress report is a row of its own (in_progress -> in_progress), once: the resend added none.
    assert list(alloc.history.order_by("at", "id").values_list("from_status", "to_status")) == [
        ("", "pending"),
        ("pending", "received"),
        ("received", "in_progress"),
        ("in_progress", "in_progress"),
        ("in_progress", "completed"),
    ]
    assert before[alloc.task_id]["task_status_data"] == {"allocation_id": alloc.task_id, "node": "node1"}
    assert BlockAllocation.objects.get().blocks == 2  # the completion hook ran once
    assert list(stopped.history.order_by("at", "id").values_list("to_status", flat=True))[-2:] == [
        "cancelling",
        "cancelled",
    ]
    assert before[stopped.task_id]["task_status_data"]["cancel"]["outcome"] == "stopped on its node"


# --- end to end: the "9 of 9 in_progress forever" experiment ------------------------------------------

CREATE = """
import json
import tests.handlers_for_tests
from tasks_app.tasks.services import task_create
done, _ = task_create(task_type="test_wait_file", execute=True, task_data={{"node": "{node}"}}, source="test")
failed, _ = task_create(task_type="test_wait_file", execute=True, task_data={{"node": "{node}", "fail": True}},
                        source="test")
print("TASKS " + json.dumps([done.task_id, failed.task_id]))
"""


class Stack:
    """A writer and a node worker on the private Redis, and this test's database."""

    def __init__(self, settings: Any, private_redis: PrivateRedis, tmp: Path) -> None:
        from tasks_app.fleet.services import cluster_ensure, node_register

        self.redis, self.tmp = private_redis, tmp
        self.name = f"outbox{uuid.uuid4().hex[:6]}"
        prefix = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
        settings.REDIS_URL = private_redis.url
        settings.TASKHUB_STREAM_PREFIX = prefix
        node_register(cluster=cluster_ensure(name="demo"), name=self.name)
        env = dict(os.environ)
        env.update(
            REDIS_URL=private_redis.url,
            CELERY_BROKER_URL=private_redis.url,
            TASKHUB_STREAM_PREFIX=prefix,
            TASKHUB_HANDLER_MODULES="tests.handlers_for_tests",
            TASKHUB_HEARTBEAT_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        self.server_env = dict(env, DATABASE_URL=database_url())
        self.node_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        self.data_dir = tmp / self.name
        self.procs = {"writer": start_manage(["run_writer"], self.server_env, tmp / "writer.log")}
        self.start_node()

    def start_node(self) -> None:
        log = self.tmp / f"node-{len(self.procs)}.log"
        self.procs[f"node{len(self.procs)}"] = start_node_worker([self.name, "--data-dir", str(self.data_dir)],
                                                                 self.node_env, log)  # fmt: skip
        alive = keys.alive_key(self.name)
        self.wait(lambda: devstack.redis_alive(self.redis.url) and self.redis.client().exists(alive), 45,
                   "the node worker to heartbeat")  # fmt: skip

    def create_two(self) -> tuple[str, str]:
        """A run that will complete and one that will fail, both started on the node, waiting for their go."""
        created = subprocess.run(
            [*MANAGE, "shell", "-c", CREATE.format(node=self.name)], env=self.server_env, capture_output=True,
            text=True, timeout=60, check=True,
        )  # fmt: skip
        line = next(ln for ln in created.stdout.splitlines() if ln.startswith("TASKS "))
        done_id, failed_id = json.loads(line.removeprefix("TASKS "))
        self.wait(lambda: {self.status(done_id), self.status(failed_id)} == {"in_progress"}, 30, "both to start")
        return done_id, failed_id

    def finish_while_redis_is_down(self, *task_ids: str) -> None:
        """Kill Redis, let the handlers end, and wait until their outcomes are in the node's outbox."""
        self.redis.kill()
        for task_id in task_ids:
            (self.data_dir / f"go-{task_id}").touch()
        box = Outbox(self.data_dir / ".taskhub" / outboxes.FILENAME)
        try:
            self.wait(lambda: len([p for p in box.pending() if p.update.status in ("completed", "failed")]) == 2,
                       30, "both outcomes in the outbox")  # fmt: skip
        finally:
            box.close()

    def outbox_empty(self) -> bool:
        box = Outbox(self.data_dir / ".taskhub" / outboxes.FILENAME)
        try:
            return not box.pending()
        finally:
            box.close()

    @staticmethod
    def status(task_id: str) -> str:
        from tasks_app.tasks.models import GlobalTask

        return str(GlobalTask.objects.values_list("task_status", flat=True).get(pk=task_id))

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> None:
        """wait_until, showing the processes' logs if it times out."""
        try:
            wait_until(check, timeout, what, interval=0.2)
        except AssertionError:
            print(self.logs())
            raise

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log")))


@pytest.fixture
def stack(settings: Any, private_redis: PrivateRedis, tmp_path: Path, transactional_db: None) -> Iterator[Stack]:
    running = Stack(settings, private_redis, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def assert_ended_as_on_the_node(stack: Stack, done_id: str, failed_id: str) -> None:
    from tasks_app.tasks.models import GlobalTask

    done = GlobalTask.objects.get(pk=done_id)
    assert done.task_status_data == {"waited": True, "node": stack.name}
    failed = GlobalTask.objects.get(pk=failed_id)
    assert failed.task_status_data["error"]["message"] == "failed as the test asked"
    for task in (done, failed):
        # One history row per status: whatever was sent twice changed nothing.
        history = list(task.history.order_by("at", "id").values_list("to_status", "source"))
        assert history == [("pending", "test"), *((s, f"node:{stack.name}") for s in ("received", "in_progress")),
                           (task.task_status, f"node:{stack.name}")]  # fmt: skip


@pytest.mark.slow
def test_runs_that_finish_while_redis_is_down_end_as_they_finished(stack: Stack) -> None:
    """The experiment that left tasks in_progress forever: two runs on a real node worker end while
    Redis is down (one completes, one fails), and Redis comes back, empty, a few seconds later."""
    done_id, failed_id = stack.create_two()
    stack.finish_while_redis_is_down(done_id, failed_id)
    time.sleep(3)  # the outage goes on a while, as in the experiment (Redis back after 6 s)
    stack.redis.start()
    stack.wait(lambda: (stack.status(done_id), stack.status(failed_id)) == ("completed", "failed"), 45, "the ends")
    stack.wait(stack.outbox_empty, 15, "the node's outbox to empty")
    assert_ended_as_on_the_node(stack, done_id, failed_id)


@pytest.mark.slow
def test_a_node_that_dies_during_the_outage_reports_when_it_starts_again(stack: Stack) -> None:
    """The outcomes outlive the node worker that had them: it is killed while Redis is down, Redis
    comes back empty (the runs' messages are gone with it), and the restarted worker reports them."""
    done_id, failed_id = stack.create_two()
    stack.finish_while_redis_is_down(done_id, failed_id)
    stop(stack.procs["node1"], signal.SIGKILL)
    stack.redis.start()
    stack.start_node()
    stack.wait(lambda: (stack.status(done_id), stack.status(failed_id)) == ("completed", "failed"), 45, "the ends")
    assert_ended_as_on_the_node(stack, done_id, failed_id)


@pytest.mark.redis
def test_one_round_trip_checks_each_runs_end_and_appends_what_may_go(redis_stream: redis.Redis) -> None:
    """push_reports: a voided run's entry is skipped, a cancelled run's outcome goes without the steps it
    folded (a cancelled run reports only how it ended), any other goes whole; ids say which."""
    from workers.protocol.stream import push_reports

    run_end.mark("run-void", run_end.End.VOID)
    run_end.mark("run-cancel", run_end.End.CANCEL)

    def folded(task_id: str, run_id: str, status: str) -> StatusUpdate:
        return StatusUpdate(
            task_id, status, {"s": status}, source="node:n1", run_id=run_id, origin=Origin.NODE, at=2.0,
            steps=(("received", 1.0), ("in_progress", 1.5)),
        )  # fmt: skip

    ids = push_reports(
        [
            folded("tv", "run-void", "completed"),
            folded("tc", "run-cancel", "cancelled"),
            folded("tp", "run-cancel", "in_progress"),  # not how it ended: dropped
            folded("tk", "run-ok", "completed"),
        ]
    )
    assert [bool(i) for i in ids] == [False, True, False, True]
    sent = {}
    for shard in range(keys.shard_count()):
        rows: list[Any] = redis_stream.xrange(keys.stream_key(shard))  # type: ignore[assignment]
        for sid, fields in rows:
            u = decode_entry(sid, fields).update
            assert u is not None
            sent[u.task_id] = (u.status, u.status_data, u.at, u.steps)
    assert sent == {
        "tc": ("cancelled", {"s": "cancelled"}, 2.0, ()),
        "tk": ("completed", {"s": "completed"}, 2.0, (("received", 1.0), ("in_progress", 1.5))),
    }
