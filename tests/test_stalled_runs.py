"""Stalled runs (issue 9, item 2): a task `received`/`in_progress` on a live node that no longer has its
run is recovered by the stalled-run sweep (tasks_app/fleet/stalled.py), and a run past its type's timeout
fails. Server-side tests run against the real Redis and the database: heartbeats are recorded as the
writers record them (record_heartbeats), node reports go through the transition function, and the node's
answers to the sweep's questions come from its own code on a real ledger and outbox. Time passing is the
task's last change (and its history) dated back. The last tests run a real node worker and a writer."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from taskhub.celery import app as celery_app
from tasks_app.fleet.models import BlockAllocation, Node
from tasks_app.fleet.scheduling import node_cordon
from tasks_app.fleet.services import cluster_ensure, node_register, record_heartbeats
from tasks_app.fleet.stalled import SOURCE, SweepResult, sweep_stalled_runs
from tasks_app.tasks.models import GlobalTask, TaskStatusChange
from tasks_app.tasks.services import task_create
from tasks_app.tasks.writer import run_once
from tests.helpers import node_report, start_manage, start_node_worker, stop, wait_until
from workers.protocol import run_asks, run_end, specs
from workers.protocol.messages import Heartbeat, Origin, StatusUpdate
from workers.protocol.status import Verdict
from workers.protocol.stream import push_update

RUN = uuid.uuid4().hex[:6]
N = f"st{RUN}-a"
GRACE = 10.0


@pytest.fixture
def node(redis_stream: redis.Redis, settings: Any) -> Iterator[str]:
    """One live queue node; publishing and run ends go to the tests' Redis (cleaned up after)."""
    settings.TASKHUB_STALLED_GRACE_SECONDS = GRACE
    settings.TASKHUB_RETRY_LIMITS = {}
    settings.TASKHUB_RUN_TIMEOUTS = {}
    node_register(cluster=cluster_ensure(name="demo"), name=N)
    Node.objects.filter(name=N).update(last_heartbeat=datetime.now(UTC))
    yield N
    for key in redis_stream.scan_iter(match=f"*st{RUN}*"):
        redis_stream.delete(key)


def beat(
    *, running: Sequence[str] = (), undelivered: Sequence[str] = (), at: float | None = None, **extra: Any
) -> None:
    """A heartbeat of N as a writer records it: by default taken now, from a worker listing for an hour."""
    runs: dict[str, Any] = {"running": list(running), "undelivered": list(undelivered), "truncated": False}
    runs.update({"listing_for": 3600.0, **extra})
    record_heartbeats([Heartbeat(node=N, at=time.time() if at is None else at, info={"runs": runs})])


def started(task_type: str = "noop", status: str = "in_progress", age: float = 60, **data: Any) -> GlobalTask:
    """A task of N that its node took, last changed `age` seconds ago."""
    task, _ = task_create(task_type=task_type, task_data={"node": N, **data}, execute=True, source="test")
    node_report(task.task_id, "received")
    if status == "in_progress":
        node_report(task.task_id, "in_progress", {"node": N, "attempt": 0})
    then = datetime.now(UTC) - timedelta(seconds=age)
    GlobalTask.objects.filter(pk=task.task_id).update(task_update_timestamp=int(then.timestamp()))
    TaskStatusChange.objects.filter(task_id=task.task_id).update(at=then)
    task.refresh_from_db()
    return task


def sweep(capture: Any) -> SweepResult:
    with capture(execute=True):  # run ends and publishes happen after the commit, as in production
        return sweep_stalled_runs()


def history(task: GlobalTask) -> list[tuple[str, str, str]]:
    return list(task.history.order_by("at", "id").values_list("from_status", "to_status", "source"))


def unchanged(task: GlobalTask) -> None:
    after = GlobalTask.objects.get(pk=task.task_id)
    assert (after.task_status, after.run_id, after.task_status_data) == (
        task.task_status,
        task.run_id,
        task.task_status_data,
    )
    assert run_end.end_of(task.run_id) is None


# --- stalled: asked, then recovered ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["received", "in_progress"])
def test_a_run_its_node_no_longer_has_fails_as_stalled_and_is_retried(
    node: str, status: str, django_capture_on_commit_callbacks: Any
) -> None:
    task = started(status=status)
    beat(running=["another-run"], undelivered=["yet-another-run"])

    # First the node is asked how the run ended; nothing changes yet.
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(asked=1)
    unchanged(task)
    question = run_asks.asked(N)[task.run_id]
    assert (question.task_id, question.task_type) == (task.task_id, "noop")

    beat(running=["another-run"], no_outcome=[task.run_id])  # its answer: no outcome for that run
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(failed=1, retried=1)

    after = GlobalTask.objects.get(pk=task.task_id)
    assert after.task_status == "pending" and after.run_id != task.run_id and after.attempts == 1
    previous = after.task_status_data["previous_attempt"]
    assert previous["attempt"] == 0
    assert previous["error"]["type"] == "Stalled"
    assert previous["error"]["message"] == f"node {N} no longer runs run {task.run_id} and has no outcome for it"
    assert history(after)[-2:] == [(status, "failed", SOURCE), ("failed", "pending", SOURCE)]
    assert run_end.end_of(task.run_id) is run_end.End.VOID  # the old run may report nothing more
    assert run_asks.asked(N) == {}  # the question is settled
    # Whatever the old run says later is ignored: it is not the task's run any more.
    assert node_report(task.task_id, "completed", {"node": N}, run_id=task.run_id).verdict is Verdict.STALE


@pytest.mark.django_db
def test_a_stalled_run_no_node_may_retry_stays_failed_and_the_sweep_goes_on(
    node: str, django_capture_on_commit_callbacks: Any
) -> None:
    """Its node was cordoned (an operator took it out of service): the retry has nowhere to go. The task
    stays failed, saying why, and the stalled run after it is still dealt with."""
    stuck, other = started(), started()
    node_cordon(node=Node.objects.get(name=N))
    beat(running=[])
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(asked=2)
    beat(running=[], no_outcome=[stuck.run_id, other.run_id])
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(failed=2)
    for task in (stuck, other):
        after = GlobalTask.objects.get(pk=task.task_id)
        assert after.task_status == "failed" and after.run_id == task.run_id
        assert after.task_status_data["error"]["type"] == "Stalled"
        assert "cannot be retried now: unschedulable" in after.task_status_data["not_retried"]
        assert f"{N}: cordoned" in after.task_status_data["not_retried"]
        assert run_end.end_of(task.run_id) is run_end.End.VOID


@pytest.mark.django_db
def test_a_stalled_run_past_its_retry_limit_stays_failed_and_is_voided(
    node: str, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TASKHUB_RETRY_LIMITS = {"noop": 0}
    task = started()
    beat(running=["another-run"], no_outcome=[task.run_id])

    assert sweep(django_capture_on_commit_callbacks) == SweepResult(failed=1)

    after = GlobalTask.objects.get(pk=task.task_id)
    assert (after.task_status, after.run_id, after.attempts) == ("failed", task.run_id, 0)
    assert after.task_status_data["error"]["type"] == "Stalled"
    assert after.task_status_data["error"]["node"] == N
    assert run_end.end_of(task.run_id) is run_end.End.VOID


@pytest.mark.django_db
def test_a_stalled_run_gets_the_outcome_its_node_ledger_kept(
    node: str, settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    """The node finished the run, but its report never left (the worker died between its ledger and its
    outbox, and the broker lost the message that would have replayed it). Asked, the node reports the
    outcome its ledger kept, as its own report; the writers apply it, completion hook and all."""
    from workers.node import lifeline, outbox, sender
    from workers.node.guard import RunGuard

    settings.TASKHUB_NODE_NAME, settings.TASKHUB_NODE_DATA_DIR = N, str(tmp_path)
    state = tmp_path / ".taskhub"
    task = started(task_type="block_alloc", cluster="demo", blocks=2)
    RunGuard(state, f"{task.run_id}.0").record({"ok": True, "result": {"allocation_id": task.task_id}})
    beat()
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(asked=1)

    box = outbox.at(state)
    try:
        assert lifeline.answer(N, state) == []  # it has the outcome: no "no outcome"
        assert run_asks.asked(N) == {}
        wait_until(lambda: not box.pending(), 10, "the node's sender to deliver the report")
    finally:
        sender.stop_all()
    while run_once():
        pass

    after = GlobalTask.objects.get(pk=task.task_id)
    result = {"allocation_id": task.task_id, "node": N}
    assert (after.task_status, after.run_id, after.task_status_data) == ("completed", task.run_id, result)
    assert history(after)[-1] == ("in_progress", "completed", f"node:{N}")
    assert BlockAllocation.objects.get(allocation_id=task.task_id).blocks == 2


def test_what_a_node_reports_from_its_ledger(tmp_path: Path, settings: Any) -> None:
    """The report of a kept outcome is the one the signal receivers would have made; a try whose automatic
    retry was due is no outcome."""
    from workers.node.guard import RunGuard
    from workers.node.lifeline import outcome_report
    from workers.protocol.run_asks import Ask

    settings.TASKHUB_RETRY_LIMITS = {}
    question = Ask("t1", "noop", time.time())  # noop: 3 automatic retries
    assert outcome_report(tmp_path, "run-none", question, "n1") is None

    RunGuard(tmp_path, "run-busy.0").record(
        {"ok": False, "error": {"message": "busy", "details": {}, "recoverable": True, "kind": "RecoverableError"}}
    )
    assert outcome_report(tmp_path, "run-busy", question, "n1") is None  # its retry never ran
    RunGuard(tmp_path, "run-busy.3").record(
        {
            "ok": False,
            "error": {"message": "still busy", "details": {"d": 1}, "recoverable": True, "kind": "RecoverableError"},
        }
    )
    assert outcome_report(tmp_path, "run-busy", question, "n1") == (
        "failed",
        {
            "error": {"type": "RecoverableError", "message": "still busy", "node": "n1", "details": {"d": 1}},
            "retries": 3,
        },
    )  # the last try's failure is the run's
    RunGuard(tmp_path, "run-c.0").record(
        {
            "ok": False,
            "error": {
                "message": "task t1 was cancelled before x",
                "details": {"stopped": "before x"},
                "recoverable": False,
                "kind": "Cancelled",
            },
        }
    )
    assert outcome_report(tmp_path, "run-c", question, "n1") == (
        "cancelled",
        {"node": "n1", "cancelled": {"message": "task t1 was cancelled before x", "stopped": "before x"}},
    )
    RunGuard(tmp_path, "run-p.0.part").record({"ok": True, "result": {"part": 1}})  # a part is not the run
    assert outcome_report(tmp_path, "run-p", question, "n1") is None
    RunGuard(tmp_path, "run-p.0").record({"ok": True, "result": {"done": True}})
    assert outcome_report(tmp_path, "run-p", question, "n1") == ("completed", {"done": True, "node": "n1"})


# --- stalled: left alone -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("listed_as", ["running", "undelivered"])
def test_a_run_its_node_lists_is_left_alone(node: str, listed_as: str, django_capture_on_commit_callbacks: Any) -> None:
    task = started()
    listed = ["another-run", task.run_id]
    if listed_as == "running":
        beat(running=listed)
    else:
        beat(undelivered=listed)
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)


@pytest.mark.django_db
def test_a_heartbeat_older_than_the_change_judges_nothing(node: str, django_capture_on_commit_callbacks: Any) -> None:
    """A run that just started is not in a heartbeat taken before it; nor within the grace after it."""
    task = started(age=0)
    beat(at=time.time() - 30)  # taken before the task's last change
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)
    beat(at=time.time() + GRACE / 2)  # after it, but within the grace
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)


@pytest.mark.django_db
def test_a_worker_that_just_started_judges_nothing(node: str, django_capture_on_commit_callbacks: Any) -> None:
    """A restarted worker gets its redelivered messages back only after its first heartbeats."""
    task = started()
    beat(listing_for=1.0)
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)


@pytest.mark.django_db
def test_lists_cut_at_their_cap_or_missing_judge_nothing(node: str, django_capture_on_commit_callbacks: Any) -> None:
    task = started()
    beat(truncated=True)
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    record_heartbeats([Heartbeat(node=N, at=time.time(), info={})])  # a pull agent, or an older worker
    assert Node.objects.get(name=N).running_runs is None
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)


@pytest.mark.django_db
def test_an_offline_node_is_left_to_the_dead_node_sweep(node: str, django_capture_on_commit_callbacks: Any) -> None:
    task = started()
    beat()
    Node.objects.filter(name=N).update(last_heartbeat=datetime.now(UTC) - timedelta(hours=1))
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)


@pytest.mark.django_db
def test_a_report_the_writers_have_not_applied_yet_is_waited_for(
    node: str, django_capture_on_commit_callbacks: Any
) -> None:
    """The node sent the outcome, then a heartbeat that (rightly) no longer lists the run; a writer is behind
    on the task's shard. The sweep waits, and the report lands."""
    task = started()
    push_update(StatusUpdate(task.task_id, "completed", {"node": N}, f"node:{N}", run_id=task.run_id,
                             origin=Origin.NODE))  # fmt: skip
    time.sleep(0.01)  # the heartbeat's stream id is later than the report's
    beat()
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)

    while run_once():
        pass
    after = GlobalTask.objects.get(pk=task.task_id)
    assert (after.task_status, after.task_status_data) == ("completed", {"node": N})


# --- run timeouts --------------------------------------------------------------------------------------


def test_a_type_timeout_comes_from_its_spec_unless_the_setting_says_otherwise(settings: Any) -> None:
    noop = specs.get("noop")
    assert noop is not None
    settings.TASKHUB_RUN_TIMEOUTS = {}
    assert noop.timeout() is None
    assert replace(noop, run_timeout=90).timeout() == 90.0
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    assert replace(noop, run_timeout=90).timeout() == 30.0
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 0.0}  # off
    assert replace(noop, run_timeout=90).timeout() is None


@pytest.mark.django_db
def test_a_run_past_its_type_timeout_fails_and_is_voided(
    node: str, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    late = started(age=45)
    in_time = started(age=15)
    beat(running=[late.run_id, in_time.run_id])  # running, as far as their node knows

    assert sweep(django_capture_on_commit_callbacks) == SweepResult(timed_out=1)

    after = GlobalTask.objects.get(pk=late.task_id)
    assert (after.task_status, after.run_id, after.attempts) == ("failed", late.run_id, 0)
    error = after.task_status_data["error"]
    assert (error["type"], error["node"], error["timeout_seconds"]) == ("RunTimeout", N, 30.0)
    assert error["message"].startswith(f"run {late.run_id} of this noop task ran longer than its timeout of 30s")
    assert history(after)[-1] == ("in_progress", "failed", SOURCE)
    assert run_end.end_of(late.run_id) is run_end.End.VOID
    # The node's late word on the run changes nothing.
    node_report(late.task_id, "completed", {"node": N})
    assert GlobalTask.objects.get(pk=late.task_id).task_status == "failed"
    unchanged(in_time)


# --- the node's side -----------------------------------------------------------------------------------


def test_a_heartbeat_lists_held_and_undelivered_runs_and_says_when_it_cut_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.node import outbox, running

    # The set is the worker process's; in this test process, runs other tests ran in-process are in it.
    monkeypatch.setattr(running, "_runs", set())
    box = outbox.at(tmp_path)
    box.put(StatusUpdate("t1", "completed", {}, "node:x", run_id="run-sent-later", origin=Origin.NODE))
    running.hold("run-a")
    try:
        report = running.runs_report(tmp_path, 12.5, ["run-asked"])
        assert report == {"running": ["run-a"], "undelivered": ["run-sent-later"], "truncated": False,
                          "listing_for": 12.5, "no_outcome": ["run-asked"]}  # fmt: skip
        many = [f"run-{i:05}" for i in range(running.MAX_LISTED + 1)]
        for run_id in many:
            running.hold(run_id)
        report = running.runs_report(tmp_path, 13.0)
        assert report is not None and report["truncated"] is True
        assert len(report["running"]) == running.MAX_LISTED and report["undelivered"] == ["run-sent-later"]
    finally:
        for run_id in running.held():
            running.release(run_id)
    assert running.runs_report(tmp_path, 14.0) == {
        "running": [], "undelivered": ["run-sent-later"], "truncated": False, "listing_for": 14.0, "no_outcome": []
    }  # fmt: skip


# --- end to end: a real node worker and a writer ----------------------------------------------------


class LiveNode:
    """A writer and one node worker (TASKHUB_HEARTBEAT_SECONDS=0.5) on this test's database and stream."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.name, self.tmp = f"st{RUN}-{uuid.uuid4().hex[:4]}", tmp
        node_register(cluster=cluster_ensure(name="demo"), name=self.name)
        self.env = dict(env, CELERY_BROKER_URL=celery_app.conf.broker_url, TASKHUB_HEARTBEAT_SECONDS="0.5",
                        TASKHUB_HANDLER_MODULES="tests.handlers_for_tests")  # fmt: skip
        self.data_dir = tmp / self.name
        self.procs = {"writer": start_manage(["run_writer"], self.env, tmp / "writer.log")}
        self.start_node()

    def start_node(self) -> None:
        node_env = {k: v for k, v in self.env.items() if k != "DATABASE_URL"}  # a node has no database
        log = self.tmp / f"node-{len(self.procs)}.log"
        self.procs[f"node{len(self.procs)}"] = start_node_worker([self.name, "--data-dir", str(self.data_dir)],
                                                                 node_env, log)  # fmt: skip
        since = time.time()
        wait_until(lambda: self.heartbeat_after(since), 60, "the node worker's first heartbeat with its runs")

    def kill_node(self) -> None:
        for name, proc in self.procs.items():
            if name.startswith("node"):
                stop(proc, signal.SIGKILL)

    def heartbeat_after(self, ts: float) -> Node | None:
        """The node's row, once a heartbeat with runs taken after `ts` is recorded."""
        row = Node.objects.get(name=self.name)
        fresh = row.runs_reported_at is not None and row.runs_reported_at.timestamp() > ts
        return row if fresh and row.running_runs is not None else None

    def status(self, task_id: str) -> str:
        return str(GlobalTask.objects.values_list("task_status", flat=True).get(pk=task_id))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        broker = redis.Redis.from_url(celery_app.conf.broker_url)
        for key in broker.scan_iter(match=f"*{self.name}*"):
            broker.delete(key)
        lose_unacked(self.name)


def lose_unacked(node: str) -> int:
    """Drop the broker's unacknowledged messages of a node's queue, as a broker that lost them would."""
    broker = redis.Redis.from_url(celery_app.conf.broker_url)
    raw: dict[bytes, bytes] = broker.hgetall("unacked")  # type: ignore[assignment]  # kombu's in-flight messages
    tags = [tag.decode() for tag, message in raw.items() if f'"node.{node}"]'.encode() in message]
    if tags:
        broker.hdel("unacked", *tags)
        broker.zrem("unacked_index", *tags)
    return len(tags)


@pytest.fixture
def live_node(child_env: dict[str, str], settings: Any, tmp_path: Path) -> Iterator[LiveNode]:
    import tests.handlers_for_tests  # noqa: F401  (this process validates test_wait_file tasks too)

    settings.TASKHUB_HANDLER_MODULES = ["tests.handlers_for_tests"]
    settings.TASKHUB_STALLED_GRACE_SECONDS = 2.0
    stack = LiveNode(child_env, tmp_path)
    try:
        yield stack
    except AssertionError:
        print(stack.logs())
        raise
    finally:
        stack.close()


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_node_heartbeat_lists_the_run_it_is_running(live_node: LiveNode) -> None:
    """A node worker runs a handler that waits; its heartbeats, applied by the writer, list the run while
    it runs, so the sweep leaves it alone however long it takes; once its outcome is out, they no longer do."""
    task, _ = task_create(task_type="test_wait_file", task_data={"node": live_node.name}, execute=True, source="t")
    wait_until(lambda: live_node.status(task.task_id) == "in_progress", 30, "the run to start")

    # A heartbeat taken more than the grace after the task's last change: it still names the run.
    changed = GlobalTask.objects.get(pk=task.task_id).task_update_timestamp
    row = wait_until(lambda: live_node.heartbeat_after(changed + 3), 30, "a heartbeat well after the run started")
    assert row.running_runs == {"running": [task.run_id], "undelivered": [], "truncated": False, "no_outcome": []}
    assert sweep_stalled_runs() == SweepResult()
    assert live_node.status(task.task_id) == "in_progress"

    (live_node.data_dir / f"go-{task.task_id}").touch()
    wait_until(lambda: live_node.status(task.task_id) == "completed", 30, "completion")
    completed = time.time()
    row = wait_until(lambda: live_node.heartbeat_after(completed), 30, "a heartbeat after the completion")
    assert row.running_runs == {"running": [], "undelivered": [], "truncated": False, "no_outcome": []}
    assert live_node.status(task.task_id) == "completed"


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_lost_with_its_node_worker_and_its_message_is_recovered(live_node: LiveNode, settings: Any) -> None:
    """The node worker dies mid-run and the broker loses the run's message, so the restarted worker never
    gets it back: without the sweep the task would stay in_progress forever. The new worker's heartbeats do
    not list the run, the sweep asks, the node answers it has no outcome (its ledger has none), and the run
    fails as stalled and is retried; the new run completes."""
    settings.TASKHUB_RETRY_LIMITS = {"test_wait_file": 1}
    task, _ = task_create(task_type="test_wait_file", task_data={"node": live_node.name}, execute=True, source="t")
    wait_until(lambda: live_node.status(task.task_id) == "in_progress", 30, "the run to start")
    live_node.kill_node()
    assert lose_unacked(live_node.name) == 1
    (live_node.data_dir / f"go-{task.task_id}").touch()  # the next run of the task finishes at once
    live_node.start_node()

    def swept() -> SweepResult | None:
        result = sweep_stalled_runs()
        return result if result.failed else None

    assert wait_until(swept, 60, "the sweep to fail the lost run", interval=0.5) == SweepResult(failed=1, retried=1)
    wait_until(lambda: live_node.status(task.task_id) == "completed", 30, "the retried run to complete")
    after = GlobalTask.objects.get(pk=task.task_id)
    assert after.run_id != task.run_id and after.attempts == 1
    assert after.task_status_data == {"waited": True, "node": live_node.name}
    statuses = list(after.history.order_by("at", "id").values_list("to_status", "source", "run_id"))
    assert ("failed", SOURCE, task.run_id) in statuses
    assert statuses[-1] == ("completed", f"node:{live_node.name}", after.run_id)
    failed = after.history.get(to_status="failed")
    assert failed.from_status == "in_progress"


# --- run timeouts: an outcome on its way is waited for ------------------------------------------------


def completed_by_node(task: GlobalTask) -> StatusUpdate:
    """The node's `completed` report of the task's run, stamped 25 s after it started: within 30 s."""
    return StatusUpdate(task.task_id, "completed", {"node": N, "answer": 42}, f"node:{N}", run_id=task.run_id,
                        origin=Origin.NODE, at=time.time() - 20)  # fmt: skip


def landed(task: GlobalTask) -> None:
    """The writers apply what is in the stream: the node's outcome is the task's."""
    while run_once():
        pass
    after = GlobalTask.objects.get(pk=task.task_id)
    assert (after.task_status, after.run_id, after.task_status_data) == (
        "completed",
        task.run_id,
        {"node": N, "answer": 42},
    )
    assert history(after)[-1] == ("in_progress", "completed", f"node:{N}")


@pytest.mark.django_db
@pytest.mark.parametrize("lists", ["none", "not-listed"])
def test_a_run_past_its_timeout_whose_outcome_is_in_the_stream_waits_for_it(
    node: str, lists: str, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The run ended within its timeout, but a writer has not applied its report yet: the sweep leaves it
    for the report. Its node sends no lists of its runs (a pull agent, an older worker), or its heartbeat,
    taken since, rightly lists the run no more."""
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    task = started(age=45)
    push_update(completed_by_node(task))
    if lists == "not-listed":
        time.sleep(0.01)  # the heartbeat's stream id is later than the report's
        beat()
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)
    landed(task)


@pytest.mark.django_db
def test_a_run_past_its_timeout_whose_outcome_is_in_its_node_outbox_waits_for_it(
    node: str, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The outcome is in the node's outbox (Redis was away from it) and its heartbeat lists the run as
    undelivered: the sweep leaves the run alone, and the outcome lands once the node pushes it."""
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    task = started(age=45)
    beat(undelivered=[task.run_id])
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)
    push_update(completed_by_node(task))
    landed(task)


@pytest.mark.django_db
def test_a_hung_run_times_out_once_its_node_says_it_still_runs_it_past_its_deadline(
    node: str, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A heartbeat taken before the deadline does not say whether the run ended in time (its outcome could
    be in the outbox since): the run waits. One taken after it that still lists the run as running times it
    out, a report of it in the outbox (a progress one) and other tasks' reports in its shard or not."""
    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    settings.TASKHUB_STREAM_SHARDS = 1  # one shard: every report is in the run's shard
    task, other = started(age=45), started(age=5)
    beat(running=[task.run_id, other.run_id], undelivered=[task.run_id], at=time.time() - 20)  # deadline: 15 s ago
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)

    push_update(StatusUpdate(other.task_id, "in_progress", {"node": N, "progress": {"percent": 10.0}}, f"node:{N}",
                             run_id=other.run_id, origin=Origin.NODE))  # fmt: skip
    beat(running=[task.run_id, other.run_id], undelivered=[task.run_id])
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(timed_out=1)
    after = GlobalTask.objects.get(pk=task.task_id)
    assert (after.task_status, after.task_status_data["error"]["type"]) == ("failed", "RunTimeout")
    assert run_end.end_of(task.run_id) is run_end.End.VOID
    unchanged(other)


@pytest.mark.django_db
def test_no_run_times_out_while_the_stream_cannot_be_read(
    node: str, settings: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """Without the stream the sweep cannot tell whether an outcome is on its way: like the stalled runs,
    the timeouts wait for a pass that can."""
    from tasks_app.tasks import stream

    settings.TASKHUB_RUN_TIMEOUTS = {"noop": 30.0}
    task = started(age=45)

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(stream, "read_after", unreachable)
    assert sweep(django_capture_on_commit_callbacks) == SweepResult()
    unchanged(task)
    monkeypatch.undo()
    assert sweep(django_capture_on_commit_callbacks) == SweepResult(timed_out=1)
    assert GlobalTask.objects.get(pk=task.task_id).task_status == "failed"
