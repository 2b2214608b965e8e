"""The `taskhub` command against the real API over real HTTP (pytest-django's live_server)."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from django.db import connection
from pytest_django.live_server_helper import LiveServer
from typer.testing import CliRunner

from cli.client import auth_headers, error_message
from cli.main import app
from cli.tasks import TaskStatus
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.models import Cluster, GlobalTask, Node, StorageUnit, Volume
from tasks_app.tasks.services import task_create
from tasks_app.tasks.transitions import StatusUpdate, task_transition
from tests.conftest import OPERATOR_PASSWORD
from tests.helpers import node_report, wait_until
from workers.protocol.status import STATUS_VALUES

# live_server serves from its own thread: the test's rows must be committed for it to see them.
pytestmark = pytest.mark.django_db(transaction=True)

PLAIN = "example_task_type"  # not a registered executable type: a plain record, never sent to Celery


@pytest.fixture(autouse=True)
def cli_auth(transactional_db: None, operator_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every command runs as the operator (TASKHUB_TOKEN), with a config directory of its own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TASKHUB_TOKEN", operator_token)
    monkeypatch.delenv("TASKHUB_URL", raising=False)
    return operator_token


def taskhub(server: LiveServer, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process against the live server; unexpected exceptions propagate."""
    return CliRunner().invoke(
        app, [*args, "--url", server.url], env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False
    )


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failed_status_data() -> dict[str, Any]:
    """Like workers.reporter.error_data for a fan-out where one node failed."""
    return {
        "error": {"type": "FanoutError", "message": "1 of 2 nodes failed", "node": "node1"},
        "nodes": {
            "node1": {"ok": True, "result": {"path": "/data/v1/unit0"}},
            "node2": {"ok": False, "error": {"type": "OSError", "message": "disk [full]"}},
        },
    }


@pytest.fixture
def cluster() -> Cluster:
    """c1 with two members that pull their tasks, so executable tasks are never published to Celery."""
    c1 = cluster_ensure(name="c1")
    node_register(cluster=c1, name="node1", transport=Node.Transport.PULL)
    node_register(cluster=c1, name="node2", transport=Node.Transport.PULL)
    return c1


# --- tasks -------------------------------------------------------------------------------------------


def test_task_list_table_filters_and_json(live_server: LiveServer) -> None:
    task_create(task_id="cli-a", task_type=PLAIN, task_data={"n": 1})
    task_create(task_id="cli-b", task_type="other_type", task_status="failed")
    task_create(task_id="cli-c", task_type=PLAIN, task_status="completed")
    GlobalTask.objects.filter(pk="cli-c").update(node="node7")

    result = taskhub(live_server, "task", "list")
    assert result.exit_code == 0, result.output
    for task_id in ("cli-a", "cli-b", "cli-c"):
        assert task_id in result.stdout
    assert "ID" in result.stdout and "STATUS" in result.stdout and "3 tasks" in result.stdout

    ids = [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "--json"))]
    assert ids == ["cli-a", "cli-b", "cli-c"]  # the API's order: oldest first
    assert [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "--type", PLAIN, "--json"))] == [
        "cli-a",
        "cli-c",
    ]
    assert [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "-s", "failed", "--json"))] == ["cli-b"]
    assert [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "--node", "node7", "--json"))] == [
        "cli-c"
    ]
    future = str(int(time.time()) + 3600)
    assert as_json(taskhub(live_server, "task", "list", "--since", future, "--json")) == []
    assert len(as_json(taskhub(live_server, "task", "list", "--since", "1h", "--json"))) == 3

    limited = taskhub(live_server, "task", "list", "--limit", "2")
    assert limited.exit_code == 0
    assert "cli-a" in limited.stdout and "cli-b" in limited.stdout and "cli-c" not in limited.stdout
    assert "limit reached" in limited.stdout


def test_task_list_follows_cursor_pages(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        task_create(task_id=f"page-{i}", task_type=PLAIN)
    GlobalTask.objects.filter(pk__in=["page-1", "page-4"]).update(node="n1")
    monkeypatch.setattr("cli.tasks.MAX_PAGE_SIZE", 2)  # pages of 2 instead of 1000: 5 tasks take 3 pages
    ids = [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "--node", "n1", "--json"))]
    assert ids == ["page-1", "page-4"]
    ids = [t["task_id"] for t in as_json(taskhub(live_server, "task", "list", "--limit", "4", "--json"))]
    assert ids == ["page-0", "page-1", "page-2", "page-3"]


def test_task_show_failed_task_with_nodes_and_history(live_server: LiveServer) -> None:
    task_create(task_id="cli-failed", task_type=PLAIN, task_data={"volume": "v1"}, source="test create")
    task_transition(update=StatusUpdate(task_id="cli-failed", status="in_progress", source="node:node1"))
    task_transition(
        update=StatusUpdate(
            task_id="cli-failed", status="failed", status_data=failed_status_data(), source="node:node1"
        )
    )

    result = taskhub(live_server, "task", "show", "cli-failed")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cli-failed" in out and PLAIN in out
    assert "Error: FanoutError: 1 of 2 nodes failed (on node node1)" in out
    node_rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("node1 ", "node2 "))}
    assert "ok" in node_rows["node1"] and "/data/v1/unit0" in node_rows["node1"]
    assert "failed" in node_rows["node2"] and "OSError: disk [full]" in node_rows["node2"]  # no rich markup
    history = out[out.index("History") :].splitlines()[2:]
    assert [line.split()[2:4] for line in history] == [
        ["(created)", "pending"],
        ["pending", "in_progress"],
        ["in_progress", "failed"],
    ]
    assert "test create" in history[0] and "node:node1" in history[2]

    shown = as_json(taskhub(live_server, "task", "show", "cli-failed", "--json"))
    assert shown["task"]["task_status"] == "failed"
    assert shown["task"]["task_status_data"]["nodes"]["node2"]["ok"] is False
    assert [(h["from_status"], h["to_status"]) for h in shown["history"]] == [
        ("", "pending"),
        ("pending", "in_progress"),
        ("in_progress", "failed"),
    ]


def test_unknown_task_exits_1_with_the_api_message(live_server: LiveServer) -> None:
    result = taskhub(live_server, "task", "show", "no-such-task")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "HTTP 404" in result.stderr and "/api/v1/tasks/no-such-task/" in result.stderr
    assert "Task 'no-such-task' not found" in result.stderr


def test_task_create_plain_and_field_errors(live_server: LiveServer) -> None:
    created = taskhub(live_server, "task", "create", PLAIN, "--data", '{"blocks": 2}', "--id", "cli-new")
    assert created.exit_code == 0, created.output
    assert "Created task cli-new" in created.stdout
    assert GlobalTask.objects.get(pk="cli-new").task_data == {"blocks": 2}

    again = as_json(taskhub(live_server, "task", "create", PLAIN, "-d", '{"blocks": 2}', "--id", "cli-new", "--json"))
    assert again["task_id"] == "cli-new"

    conflict = taskhub(live_server, "task", "create", PLAIN, "-d", '{"blocks": 3}', "--id", "cli-new")
    assert conflict.exit_code == 1
    assert "already exists with a different body" in conflict.stderr and "HTTP 409" in conflict.stderr

    bad_id = taskhub(live_server, "task", "create", PLAIN, "--id", "bad id")
    assert bad_id.exit_code == 1
    assert "task_id: " in bad_id.stderr and "HTTP 400" in bad_id.stderr

    not_exec = taskhub(live_server, "task", "create", PLAIN, "--node", "node1")
    assert not_exec.exit_code == 1 and "is not an executable type" in not_exec.stderr

    bad_json = taskhub(live_server, "task", "create", PLAIN, "--data", "[1, 2]")
    assert bad_json.exit_code == 2 and "JSON object" in bad_json.stderr


# --- --watch -----------------------------------------------------------------------------------------


def _complete_later(task_id: str) -> threading.Thread:
    """From another thread (as a node would, through the writers): in_progress, then completed."""

    def run() -> None:
        try:
            wait_until(lambda: GlobalTask.objects.filter(pk=task_id).exists(), timeout=20, what=f"task {task_id}")
            time.sleep(0.7)
            task_transition(update=StatusUpdate(task_id=task_id, status="in_progress", source="node:node1"))
            time.sleep(0.7)
            task_transition(
                update=StatusUpdate(task_id=task_id, status="completed", status_data={"ok": 1}, source="node:node1")
            )
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_create_watch_follows_the_task_to_completed(live_server: LiveServer) -> None:
    thread = _complete_later("cli-watched")
    result = taskhub(live_server, "task", "create", PLAIN, "--id", "cli-watched", "--watch", "--timeout", "30")
    thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    lines = [line.split()[-1] for line in result.stdout.splitlines() if "  cli-watched  " in line]
    assert lines == ["pending", "in_progress", "completed"]
    assert "Task cli-watched completed" in result.stdout


def test_watch_json_prints_the_final_task(live_server: LiveServer) -> None:
    thread = _complete_later("cli-watched-json")
    result = taskhub(
        live_server, "task", "create", PLAIN, "--id", "cli-watched-json", "--watch", "--json", "--timeout", "30"
    )
    thread.join(timeout=30)
    final = as_json(result)
    assert final["task_id"] == "cli-watched-json" and final["task_status"] == "completed"
    assert final["task_status_data"] == {"ok": 1}


def test_watch_follows_the_event_stream_with_progress(live_server: LiveServer) -> None:
    """`task watch` is on the event stream: it needs no long poll, and shows progress reports."""
    from tasks_app.api.event_hub import HUB

    task_create(task_id="cli-streamed", task_type=PLAIN, task_status="pending")

    def run() -> None:
        try:
            wait_until(lambda: HUB.streams > 0, 20, "the watcher's stream")
            for status, data in (("in_progress", None), ("in_progress", {"progress": {"percent": 40.0}}),
                                 ("completed", {"ok": 2})):  # fmt: skip
                task_transition(update=StatusUpdate(task_id="cli-streamed", status=status, status_data=data))
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    result = taskhub(live_server, "task", "watch", "cli-streamed", "--json", "--timeout", "30")
    thread.join(timeout=30)
    final = as_json(result)
    assert final["task_status"] == "completed" and final["task_status_data"] == {"ok": 2}


def test_events_prints_each_event_and_replays_from_an_id(live_server: LiveServer) -> None:
    from tasks_app.api.event_hub import HUB
    from tasks_app.models import TaskStatusChange

    task_create(task_id="ev-old", task_type="cli-ev", task_status="pending")
    start = TaskStatusChange.objects.filter(task_id="ev-old").get().id - 1

    def run() -> None:
        try:
            wait_until(lambda: HUB.streams > 0, 20, "the events command's stream")
            task_create(task_id="ev-other", task_type="other-type", task_status="pending")
            task_create(task_id="ev-new", task_type="cli-ev", task_status="pending")
            task_transition(update=StatusUpdate(task_id="ev-new", status="failed", status_data={"why": "test"}))
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    result = taskhub(live_server, "events", "--type", "cli-ev", "--after", str(start), "--count", "3", "--json")
    thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["task_id"], e["kind"], e["to_status"]) for e in events] == [
        ("ev-old", "created", "pending"), ("ev-new", "created", "pending"), ("ev-new", "status", "failed"),
    ]  # fmt: skip
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    table = taskhub(live_server, "events", "--type", "cli-ev", "--after", str(start), "--count", "1")
    assert table.exit_code == 0, table.output
    assert "ev-old" in table.stdout and "created" in table.stdout and f"#{start + 1}" in table.stdout
    bad = taskhub(live_server, "events", "--status", "done", "--for", "1")
    assert bad.exit_code == 1 and "'done' is not a status" in bad.output


def test_watch_exit_codes_for_finished_and_stuck_tasks(live_server: LiveServer) -> None:
    task_create(task_id="done", task_type=PLAIN, task_status="completed")
    task_create(task_id="broken", task_type=PLAIN, task_status="failed", task_status_data=failed_status_data())
    task_create(task_id="stuck", task_type=PLAIN)

    assert taskhub(live_server, "task", "watch", "done").exit_code == 0

    failed = taskhub(live_server, "task", "watch", "broken")
    assert failed.exit_code == 1
    assert "Task broken failed" in failed.stdout and "OSError: disk [full]" in failed.stdout

    started = time.monotonic()
    stuck = taskhub(live_server, "task", "watch", "stuck", "--timeout", "0.6")
    assert stuck.exit_code == 2
    assert "timed out after 0.6s" in stuck.stderr and "still pending" in stuck.stderr
    assert time.monotonic() - started < 10


def test_watch_shows_progress_reported_by_the_handler(live_server: LiveServer) -> None:
    from tasks_app.api.event_hub import HUB
    from tasks_app.models import TaskStatusChange

    task_create(task_id="cli-progress", task_type=PLAIN)
    # httpx logs each response the CLI gets: the watcher has subscribed (the stream answered) before it moves.
    responses: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: responses.append(record.getMessage())  # type: ignore[method-assign]
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level

    def run() -> None:
        try:
            wait_until(lambda: any("/api/v1/events/" in r for r in responses), 20, "the watcher's stream")
            progress = {"progress": {"percent": 40.0, "message": "copying blocks"}}
            task_transition(update=StatusUpdate("cli-progress", "in_progress", progress, source="node:node1"))
            row = TaskStatusChange.objects.filter(task_id="cli-progress").latest("id").id
            wait_until(lambda: (HUB.frontier or 0) >= row, 20, "the stream to hand the change out")
            time.sleep(0.5)  # for the bar to be drawn: rich redraws it a few times a second
            task_transition(update=StatusUpdate("cli-progress", "completed", {"ok": 1}, source="node:node1"))
        finally:
            connection.close()

    httpx_log.addHandler(handler)
    httpx_log.setLevel(logging.INFO)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # The bar is drawn on a terminal only: these make rich treat the captured output as one, without
        # colours, so what it drew can be read back.
        terminal = {"TTY_COMPATIBLE": "1", "TERM": "xterm", "NO_COLOR": "1"}
        result = taskhub(live_server, "task", "watch", "cli-progress", "--timeout", "30", env=terminal)
        thread.join(timeout=30)
    finally:
        httpx_log.removeHandler(handler)
        httpx_log.setLevel(level)
    assert result.exit_code == 0, result.output
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)  # cursor moves and line clears
    # Each status it reached, in order, then the outcome.
    reached = [line.split("  ")[-1] for line in out.splitlines() if "  cli-progress  " in line]
    assert reached == ["pending", "in_progress", "completed"], out
    assert out.rstrip().endswith("Task cli-progress completed"), out
    # The handler's progress on the bar: its message and its percentage.
    assert re.search(r"copying blocks\s+\S+\s+40%", out), out


def test_retry_and_cancel(live_server: LiveServer, cluster: Cluster) -> None:
    task_create(task_id="cli-failed", task_type="noop", task_data={"node": "node1"}, execute=True)
    node_report("cli-failed", "failed", failed_status_data())
    retried = taskhub(live_server, "task", "retry", "cli-failed")
    assert retried.exit_code == 0, retried.output
    assert "pending" in retried.stdout and "attempt 1" in retried.stdout
    assert GlobalTask.objects.get(pk="cli-failed").attempts == 1
    again = taskhub(live_server, "task", "retry", "cli-failed")
    assert again.exit_code == 1 and "Only a failed or cancelled task can be retried" in again.stderr
    # The history shows which run each change belongs to: the failed one, then the retry's.
    runs = list(GlobalTask.objects.get(pk="cli-failed").history.order_by("at", "id").values_list("run_id", flat=True))
    shown = taskhub(live_server, "task", "show", "cli-failed").stdout
    history = shown[shown.index("History") :].splitlines()[2:]
    assert [line.split()[4] for line in history] == [run[:8] for run in runs] and runs[0] != runs[-1]
    cancelled = taskhub(live_server, "task", "cancel", "cli-failed", "--json")
    assert as_json(cancelled)["task_status"] == "cancelled"
    assert taskhub(live_server, "task", "cancel", "cli-failed").exit_code == 1


# --- clusters, nodes, volumes --------------------------------------------------------------------------


def test_cluster_and_node_list(live_server: LiveServer, cluster: Cluster) -> None:
    other = cluster_ensure(name="c2")
    node_register(cluster=other, name="far")
    Node.objects.filter(name="node1").update(last_heartbeat=datetime.now(UTC))

    clusters = taskhub(live_server, "cluster", "list")
    assert clusters.exit_code == 0, clusters.output
    assert "c1" in clusters.stdout and "node1, node2" in clusters.stdout and "2 clusters" in clusters.stdout
    assert {c["name"]: sorted(c["nodes"]) for c in as_json(taskhub(live_server, "cluster", "list", "--json"))} == {
        "c1": ["node1", "node2"],
        "c2": ["far"],
    }

    nodes = taskhub(live_server, "node", "list", "--cluster", "c1")
    assert nodes.exit_code == 0, nodes.output
    rows = {line.split()[0]: line.split() for line in nodes.stdout.splitlines() if line.startswith("node")}
    assert rows["node1"][1:5] == ["c1", "member", "pull", "yes"]
    assert rows["node2"][4] == "no" and "never" in rows["node2"]
    assert "far" not in nodes.stdout and "2 nodes, 1 online" in nodes.stdout

    listed = as_json(taskhub(live_server, "node", "list", "--json"))
    assert {n["name"]: n["online"] for n in listed} == {"node1": True, "node2": False, "far": False}
    by_id = as_json(taskhub(live_server, "node", "list", "-c", str(other.pk), "--json"))
    assert [n["name"] for n in by_id] == ["far"]

    unknown = taskhub(live_server, "node", "list", "--cluster", "nope")
    assert unknown.exit_code == 1 and "No cluster 'nope'" in unknown.stderr


def test_volume_list(live_server: LiveServer, cluster: Cluster) -> None:
    assert as_json(taskhub(live_server, "volume", "list", "--json")) == []
    vol = Volume.objects.create(name="v1", cluster=cluster, type="replicate", state="started", task_id="t-1")
    for i, node in enumerate(Node.objects.filter(cluster=cluster).order_by("name")):
        StorageUnit.objects.create(volume=vol, node=node, path=f"/data/v1/unit{i}", index=i)
    other = cluster_ensure(name="c2")
    Volume.objects.create(name="solo", cluster=other, type="distribute", state="created")

    result = taskhub(live_server, "volume", "list", "--cluster", "c1")
    assert result.exit_code == 0, result.output
    assert "v1" in result.stdout and "node1:/data/v1/unit0, node2:/data/v1/unit1" in result.stdout
    assert "solo" not in result.stdout and "1 volume" in result.stdout

    everything = as_json(taskhub(live_server, "volume", "list", "--json"))
    assert sorted((v["cluster"], v["name"]) for v in everything) == [("c1", "v1"), ("c2", "solo")]
    assert taskhub(live_server, "volume", "list", "-c", "nope").exit_code == 1


def test_volume_create_answers_the_task(live_server: LiveServer, cluster: Cluster) -> None:
    result = taskhub(live_server, "volume", "create", "v1", "-c", "c1", "-u", "node1", "-u", "node2:bricks/b", "--json")
    task = as_json(result)
    assert task["task_type"] == "volume_create" and task["task_status"] == "pending"
    assert task["node"] == "node1"
    assert task["task_data"]["storage_units"] == [{"node": "node1"}, {"node": "node2", "path": "bricks/b"}]
    assert GlobalTask.objects.get(pk=task["task_id"]).task_type == "volume_create"

    people = taskhub(live_server, "volume", "create", "v2", "-c", "c1", "-u", "node1", "-u", "node2")
    assert people.exit_code == 0, people.output
    # Placed by the balanced rule: v1's task is still pending on node1, so v2's goes to node2.
    placed = GlobalTask.objects.get(task_type="volume_create", task_data__name="v2")
    assert "Creating volume v2: task" in people.stdout and "on node node2" in people.stdout and placed.node == "node2"

    unknown_node = taskhub(live_server, "volume", "create", "v3", "-c", "c1", "-u", "node1", "-u", "ghost")
    assert unknown_node.exit_code == 1
    assert "task_data.storage_units[1].node: no node named 'ghost'" in unknown_node.stderr

    missing_units = taskhub(live_server, "volume", "create", "v4", "-c", "c1")
    assert missing_units.exit_code == 2  # click: --unit is required

    bad_unit = taskhub(live_server, "volume", "create", "v4", "-c", "c1", "-u", "node1:")
    assert bad_unit.exit_code == 2 and "NODE:PATH" in bad_unit.stderr


def test_volume_start_stop_delete(live_server: LiveServer, cluster: Cluster) -> None:
    vol = Volume.objects.create(name="v1", cluster=cluster, type="replicate", state="created")
    for i, node in enumerate(Node.objects.filter(cluster=cluster).order_by("name")):
        StorageUnit.objects.create(volume=vol, node=node, path=f"/data/v1/unit{i}", index=i)

    start = as_json(taskhub(live_server, "volume", "start", "v1", "-c", "c1", "--json"))
    assert start["task_type"] == "volume_start" and start["task_data"]["name"] == "v1"

    stop = taskhub(live_server, "volume", "stop", "v1", "-c", "c1")
    assert stop.exit_code == 1 and "volume 'v1' is created; cannot stop it" in stop.stderr

    delete = taskhub(live_server, "volume", "delete", "v1", "--cluster", "c1")
    assert delete.exit_code == 0, delete.output
    assert "Deleting volume v1: task" in delete.stdout
    assert GlobalTask.objects.filter(task_type="volume_delete", task_data__name="v1").count() == 1


# --- connection, URL, auth, exit codes -----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _taskhub_command() -> list[str]:
    """The installed entry point (`pip install -e .`, done by `make`), else the same app as a module."""
    script = Path(sys.executable).with_name("taskhub")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def test_exit_codes_of_the_installed_command(live_server: LiveServer, cli_auth: str, tmp_path: Path) -> None:
    task_create(task_id="sub-1", task_type=PLAIN)
    closed = f"http://127.0.0.1:{_closed_port()}"
    cases = [
        (["task", "show", "sub-1", "--url", live_server.url], 0, "sub-1"),
        (["task", "show", "missing", "--url", live_server.url], 1, "HTTP 404"),
        (["task", "list", "--limit", "0", "--url", live_server.url], 2, "--limit"),
        (["task", "list", "--url", closed], 3, f"cannot connect to taskhub at {closed}"),
        (["--url", "not-a-url", "cluster", "list"], 2, "not an http(s) URL"),
    ]
    for args, code, text in cases:
        proc = subprocess.run(
            [*_taskhub_command(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "TASKHUB_TOKEN": cli_auth, "XDG_CONFIG_HOME": str(tmp_path / "xdg")},
        )
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert text in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)


def test_url_from_environment_and_top_level_option(live_server: LiveServer) -> None:
    task_create(task_id="env-1", task_type=PLAIN)
    runner = CliRunner()
    env = {"TASKHUB_URL": live_server.url, "COLUMNS": "200"}
    assert "env-1" in runner.invoke(app, ["task", "list"], env=env, catch_exceptions=False).stdout
    top = runner.invoke(app, ["--url", live_server.url, "task", "list", "--json"], catch_exceptions=False)
    assert [t["task_id"] for t in json.loads(top.stdout)] == ["env-1"]
    # A command's own --url wins over the top-level one.
    closed = f"http://127.0.0.1:{_closed_port()}"
    inner = runner.invoke(app, ["--url", closed, "task", "list", "--url", live_server.url], catch_exceptions=False)
    assert inner.exit_code == 0, inner.output


def test_token_is_sent_when_set(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKHUB_TOKEN", raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv("TASKHUB_TOKEN", "abc123")
    assert auth_headers() == {"Authorization": "Token abc123"}
    # The server checks it: a wrong token is a 401, with a hint at what to do.
    wrong = taskhub(live_server, "cluster", "list", env={"TASKHUB_TOKEN": "abc123"})
    assert wrong.exit_code == 1
    assert "Invalid token" in wrong.stderr and "HTTP 401" in wrong.stderr and "taskhub login" in wrong.stderr
    monkeypatch.delenv("TASKHUB_TOKEN")
    nothing = taskhub(live_server, "cluster", "list")
    assert nothing.exit_code == 1 and "HTTP 401" in nothing.stderr


# --- login and logout ----------------------------------------------------------------------------------


def login(server: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["login", "--url", server.url, *args], input=f"{OPERATOR_PASSWORD}\n", catch_exceptions=False
    )


def test_login_saves_the_token_privately_and_commands_use_it(
    live_server: LiveServer, operator_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKHUB_TOKEN")
    task_create(task_id="login-1", task_type=PLAIN)
    result = login(live_server, "--username", "operator", "--password-stdin")
    assert result.exit_code == 0, result.output
    path = tmp_path / "xdg" / "taskhub" / "config.json"
    assert f"saved in {path}" in result.stdout
    assert json.loads(path.read_text()) == {"url": live_server.url, "token": operator_token}
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    # No --url and no TASKHUB_URL: the saved server, with the saved token.
    listed = CliRunner().invoke(app, ["task", "list", "--json"], catch_exceptions=False)
    assert [t["task_id"] for t in as_json(listed)] == ["login-1"]
    # The token goes only to the server it was saved for.
    assert auth_headers(live_server.url) == {"Authorization": f"Token {operator_token}"}
    assert auth_headers("http://127.0.0.1:1") == {}
    # TASKHUB_TOKEN comes first.
    assert taskhub(live_server, "task", "list", env={"TASKHUB_TOKEN": "stale"}).exit_code == 1

    out = CliRunner().invoke(app, ["logout"], catch_exceptions=False)
    assert out.exit_code == 0 and "Logged out" in out.stdout and not path.exists()
    again = CliRunner().invoke(app, ["logout"], catch_exceptions=False)
    assert again.exit_code == 0 and "Not logged in" in again.stdout
    assert taskhub(live_server, "task", "list").exit_code == 1


def test_login_prompts_and_refuses_a_wrong_password(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache

    cache.clear()  # the login throttle's counts
    path = tmp_path / "xdg" / "taskhub" / "config.json"
    wrong = CliRunner().invoke(app, ["login", "--url", live_server.url], input="operator\nnope\n")
    assert wrong.exit_code == 1
    assert "Unable to log in" in wrong.stderr and not path.exists()
    # A stale TASKHUB_TOKEN (set by the autouse fixture to a valid one; here a wrong one) does not block login.
    monkeypatch.setenv("TASKHUB_TOKEN", "stale")
    right = CliRunner().invoke(
        app, ["login", "--url", live_server.url], input=f"operator\n{OPERATOR_PASSWORD}\n", catch_exceptions=False
    )
    assert right.exit_code == 0, right.output
    assert "Password" in right.stdout and OPERATOR_PASSWORD not in right.stdout  # hidden input
    assert "TASKHUB_TOKEN is set" in right.stderr
    assert path.exists()


def test_error_message_flattens_field_errors() -> None:
    assert error_message({"detail": "Not found."}) == "Not found."
    assert error_message({"success": False, "message": "too big"}) == "too big"
    assert error_message({"task_id": ["bad", "worse"], "non_field_errors": ["oops"]}) == "task_id: bad worse; oops"
    nested = {"storage_units": [{}, {"node": ["This field is required."]}]}
    assert error_message(nested) == "storage_units[1].node: This field is required."


def test_cli_statuses_match_the_server() -> None:
    assert tuple(s.value for s in TaskStatus) == STATUS_VALUES
