"""A node run always ends with a report and lets go of its hold, whatever Redis does at its edges.

- A recoverable failure whose automatic retry the broker will not take (Redis away, or out of memory)
  fails the run (RetryNotScheduled) instead of Celery's silent Reject, after retrying the publish a
  little; a broker back within that time gets the retry (workers/node/celery_tasks.py).
- A Redis blip while a run reads its end marker (at its start, at a handler's safe point) is ridden
  out with backoff; an outage longer than the bound stops the run with an error that says so
  (workers/node/context.py read_end).

Runs go through Celery's real tracer, as a worker's pool runs them. Redis is made to fail by killing a
private redis-server (tests/test_node_outbox.py PrivateRedis) or by a closed loopback port; the sender
thread is left out, so what a run reported stays in the outbox to be read.
"""

from __future__ import annotations

import json
import threading
import types
import uuid
from pathlib import Path
from typing import Any, cast

import pytest

import tests.handlers_for_tests  # noqa: F401  (test_flaky: fails recoverably until its Nth run)
from taskhub import devstack
from taskhub.celery import app as celery_app
from tests.conftest import PrivateRedis
from workers.node import celery_tasks, context, outbox, running, sender, signals
from workers.node.context import NodeRunContext
from workers.protocol import keys, run_end
from workers.protocol.errors import Cancelled
from workers.protocol.queues import EXECUTE_TASK

NODE = "resil1"


@pytest.fixture
def node(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process as a node with nothing held, whose reports stay in its outbox: its bookkeeping dir."""
    settings.TASKHUB_NODE_NAME = NODE
    settings.TASKHUB_NODE_DATA_DIR = str(tmp_path / NODE)
    settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
    monkeypatch.setattr(running, "_runs", set())
    monkeypatch.setattr(sender, "running", lambda state: types.SimpleNamespace(wake=lambda: None))
    return tmp_path / NODE / ".taskhub"


def broker_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Celery publishes (a retry's message) to `url` for this test: its cached pools are set aside."""
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads it before its own setting
    monkeypatch.setattr(celery_app.conf, "broker_url", url)
    monkeypatch.setattr(celery_app.conf, "broker_write_url", None)
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)


def run(task_type: str, task_data: dict[str, Any]) -> tuple[str, str]:
    """One delivery of a run, received and traced as a worker does; its run id and Celery's final state."""
    from celery.app.trace import build_tracer  # type: ignore[import-untyped]

    run_id = uuid.uuid4().hex
    kwargs = {"task_id": f"t-{run_id[:8]}", "run_id": run_id, "task_type": task_type,
              "task_data": {"node": NODE, **task_data}, "node": NODE, "attempt": 0}  # fmt: skip
    signals.on_received(request=types.SimpleNamespace(name=EXECUTE_TASK, kwargs=kwargs))
    trace = build_tracer(EXECUTE_TASK, celery_tasks.execute, app=celery_app, eager=False, propagate=False)
    request = {"id": run_id, "retries": 0, "delivery_info": {"routing_key": "q", "exchange": ""}, "headers": {},
               "kwargs": kwargs, "args": []}  # fmt: skip
    info = trace(run_id, (), kwargs, request)[1]
    return run_id, "SUCCESS" if info is None else str(info.state)  # the tracer has no info on a success


def reported(state_dir: Path, run_id: str) -> list[tuple[str, Any]]:
    pending = outbox.at(state_dir).pending()
    return [(p.update.status, p.update.status_data) for p in pending if p.update.run_id == run_id]


def queued(server: PrivateRedis) -> list[dict[str, Any]]:
    """Every message on the broker's queues (Celery's Redis transport keeps each queue in a list)."""
    client = server.client()
    lists = [key for key in client.scan_iter() if client.type(key) == b"list"]
    return [json.loads(m) for key in lists for m in cast(list[bytes], client.lrange(key, 0, -1))]


# --- An automatic retry the broker refuses ------------------------------------------------------


def test_a_retry_the_broker_refuses_fails_the_run_and_lets_it_go(
    node: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.TASKHUB_RETRY_LIMITS = {"test_flaky": 3}
    monkeypatch.setattr(celery_tasks, "RETRY_PUBLISH_SECONDS", 1.0)
    broker_at(monkeypatch, f"redis://127.0.0.1:{devstack.free_port()}/0")  # nobody listens there

    run_id, state = run("test_flaky", {"succeed_on": 5})

    assert state == "FAILURE"  # not REJECTED: that fires no signal, and the run would report nothing
    assert run_id not in running.held()
    status, data = reported(node, run_id)[-1]
    assert status == "failed"
    error = data["error"]
    assert error["type"] == "RetryNotScheduled" and error["node"] == NODE
    assert "automatic retry could not be scheduled" in error["message"]
    assert error["details"]["cause"] == {"type": "RecoverableError", "message": "device busy (run 1)"}
    assert error["details"]["tries"] >= 2  # the publish was tried again before giving up
    assert data["retries"] == 0
    listed = running.runs_report(node, 3600.0)
    assert listed is not None and run_id not in listed["running"]


def test_a_broker_back_within_the_bound_takes_the_retry(
    node: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, private_redis: PrivateRedis
) -> None:
    settings.TASKHUB_RETRY_LIMITS = {"test_flaky": 3}
    broker_at(monkeypatch, private_redis.url)
    private_redis.kill()
    timer = private_redis.restart_in(1.5)  # past Celery's own publish retries (about 0.6 s)
    try:
        run_id, state = run("test_flaky", {"succeed_on": 5})
    finally:
        timer.join()

    assert state == "RETRY"
    assert run_id in running.held()  # held until its retry runs and ends
    assert all(status not in ("completed", "failed") for status, _ in reported(node, run_id))
    messages = queued(private_redis)
    assert [m["headers"]["id"] for m in messages] == [run_id]  # the retry's message, with the broker
    assert messages[0]["headers"]["retries"] == 1


# --- Reading a run's end marker through a Redis blip ---------------------------------------------


def test_a_redis_blip_at_run_start_is_ridden_out(node: Path, settings: Any, private_redis: PrivateRedis) -> None:
    settings.REDIS_URL = private_redis.url
    settings.TASKHUB_RETRY_LIMITS = {"noop": 0}
    private_redis.kill()
    timer = private_redis.restart_in(1.0)
    try:
        run_id, state = run("noop", {})
    finally:
        timer.join()

    assert state == "SUCCESS"
    assert [status for status, _ in reported(node, run_id)] == ["received", "in_progress", "completed"]
    assert run_id not in running.held()


def test_a_redis_outage_past_the_bound_fails_the_run_saying_why(
    node: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{devstack.free_port()}/0"
    settings.TASKHUB_RETRY_LIMITS = {"noop": 0}
    monkeypatch.setattr(context, "END_READ_SECONDS", 1.0)

    run_id, state = run("noop", {})

    assert state == "FAILURE"
    status, data = reported(node, run_id)[-1]
    assert status == "failed"
    assert data["error"]["type"] == "EndMarkerUnreadable"
    assert "Redis did not answer for 1 s" in data["error"]["message"]
    assert data["error"]["details"]["tries"] >= 2
    assert run_id not in running.held()


def test_a_handlers_safe_point_rides_out_a_redis_blip(node: Path, settings: Any, private_redis: PrivateRedis) -> None:
    settings.REDIS_URL = private_redis.url
    ctx = NodeRunContext("t-safe", uuid.uuid4().hex, "noop", NODE, Path(settings.TASKHUB_NODE_DATA_DIR))
    private_redis.kill()
    timer = private_redis.restart_in(1.0)
    try:
        assert ctx.cancelled() is False
    finally:
        timer.join()

    # The marker is still read: a cancel set while Redis was back stops the handler at its next safe point.
    private_redis.kill()
    timer = private_redis.restart_in(1.0)
    try:
        threading.Timer(1.5, lambda: run_end.mark(ctx.run_id, run_end.End.CANCEL)).start()
        with pytest.raises(Cancelled):
            wait_for_cancel(ctx)
    finally:
        timer.join()
    assert private_redis.client().get(keys.run_end_key(ctx.run_id)) == b"cancel"


def wait_for_cancel(ctx: NodeRunContext) -> None:
    """A handler's loop of safe points, for at most 10 s."""
    for _ in range(100):
        ctx.check_cancelled("between steps")
        threading.Event().wait(0.1)
