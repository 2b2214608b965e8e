"""GET /api/v1/events/: the task event stream, against a real gunicorn started with gunicorn.conf.py.

The Done-means test: a client sees every transition of 1,000 tasks in order per task, disconnects mid-way
while the changes go on, reconnects with Last-Event-ID, and ends with exactly the full set, nothing lost
and nothing twice. On PostgreSQL two writers commit at once, so rows become visible out of id order and
the stream's gap rule (tasks_app/api/event_hub.py) is what keeps every event.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from cli.sse import SseEvent, parse
from tests.helpers import free_port, start_gunicorn, stop, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TASKS = 1000
TYPE = "events_test"


@dataclass
class Server:
    base_url: str
    log: Path
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", **extra}


def _serve(child_env: dict[str, str], tmp_path: Path, token: str, **settings: str) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in child_env.items() if k not in ("GUNICORN_CMD_ARGS", "GUNICORN_THREADS")}
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", GUNICORN_GRACEFUL_TIMEOUT="2",
        TASKHUB_EVENTS_POLL_SECONDS="0.05", **settings,
    )  # fmt: skip
    log = tmp_path / "gunicorn.log"
    base_url = f"http://127.0.0.1:{port}"
    proc = start_gunicorn(env, log, base_url)
    try:
        yield Server(base_url, log, token)
    finally:
        stop(proc)
        print("--- gunicorn log ---", log.read_text(errors="replace")[-6000:], sep="\n")


@pytest.fixture
def server(child_env: dict[str, str], tmp_path: Path, operator_token: str) -> Iterator[Server]:
    yield from _serve(child_env, tmp_path, operator_token)


class Reader:
    """One stream connection, read on a thread of its own: its events, as they come."""

    def __init__(self, server: Server, *, params: dict[str, str] | None = None, last_id: str | None = None) -> None:
        headers = server.headers(Accept="text/event-stream")
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.events: list[SseEvent] = []
        self.opened = threading.Event()
        self.done = threading.Event()
        self.status: int | None = None
        self.body = ""
        self._stop = False
        self._resp: httpx.Response | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self._request = self._client.build_request("GET", f"{server.base_url}/api/v1/events/", params=params,
                                                   headers=headers)  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(15), "the stream did not open"
        assert self.status == 200, f"the stream answered {self.status}: {self.body}"

    def _read(self) -> None:
        try:
            resp = self._resp = self._client.send(self._request, stream=True)
            try:
                self.status = resp.status_code
                if resp.status_code != 200:
                    self.body = resp.read().decode()
                    return
                lines = resp.iter_lines()
                first = next(lines)  # the `retry:` line: the server has subscribed
                assert first.startswith("retry:"), first
                self.opened.set()
                for event in parse(lines):
                    self.events.append(event)
                    if self._stop or event.event in ("end", "cutoff"):
                        return
            finally:
                resp.close()
        except (httpx.HTTPError, StopIteration):
            pass
        finally:
            self.opened.set()
            self.done.set()
            self._client.close()

    def tasks(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == "task"]

    def close(self) -> None:
        """Hang up: the connection is closed under the reading thread, as a client that goes away does."""
        self._stop = True
        if self._resp is not None:
            self._resp.close()
        self._client.close()
        self._thread.join(10)


def _drive(task_ids: list[str]) -> None:
    """Each task: pending -> in_progress, progress (the same status with new data), -> completed, as a
    client reports them, in batches through the one transition function (what the writers run)."""
    from tasks_app.tasks.transitions import StatusUpdate, task_transition_many

    try:
        for start in range(0, len(task_ids), 50):
            chunk = task_ids[start : start + 50]
            for status, data in (
                ("in_progress", {"progress": {"percent": 10.0, "message": "started"}}),
                ("in_progress", {"progress": {"percent": 50.0, "message": "half"}}),
                ("completed", {"result": "ok"}),
            ):
                outcomes = task_transition_many(
                    updates=[StatusUpdate(t, status, data, source="test:driver") for t in chunk]
                )
                assert all(o.verdict is not None and o.verdict.name in ("APPLY", "SAME") for o in outcomes), outcomes
    finally:
        connection.close()


def _create(server: Server, task_ids: list[str]) -> None:
    with httpx.Client(timeout=60, headers=server.headers()) as http:
        for start in range(0, len(task_ids), 250):
            items = [{"task_id": t, "task_type": TYPE, "task_data": {"n": i}} for i, t in
                     enumerate(task_ids[start : start + 250], start)]  # fmt: skip
            resp = http.post(f"{server.base_url}/api/v1/tasks/bulk/", json={"tasks": items})
            assert resp.status_code == 201, resp.text


EXPECTED = [("created", "", "pending"), ("status", "pending", "in_progress"),
            ("progress", "in_progress", "in_progress"),
            ("status", "in_progress", "completed")]  # fmt: skip


def test_a_client_that_reconnects_with_last_event_id_ends_with_every_event_exactly_once(server: Server) -> None:
    task_ids = [f"ev-{i:04d}" for i in range(TASKS)]
    first = Reader(server)
    writers = 2 if connection.vendor == "postgresql" else 1  # SQLite takes one writer at a time
    _create(server, task_ids)

    def drive_all() -> None:
        threads = [threading.Thread(target=_drive, args=(task_ids[w::writers],)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    driver = threading.Thread(target=drive_all)
    driver.start()
    # Mid-way: disconnect once this client has seen a good part of it, while the changes go on.
    wait_until(lambda: len(first.events) >= 1800, 120, "the first connection to see 1,800 events")
    first.close()
    seen = first.tasks()
    assert [e for e in first.events if e.event == "task"][-1].id == str(seen[-1]["id"])
    second = Reader(server, last_id=str(seen[-1]["id"]))
    driver.join(300)
    assert not driver.is_alive()
    total = TASKS * len(EXPECTED)
    from tasks_app.models import TaskStatusChange

    rows = TaskStatusChange.objects.filter(task__task_type=TYPE).count()
    assert rows == total, f"{rows} history rows"
    try:
        wait_until(lambda: len(seen) + len(second.tasks()) >= total, 60, f"{total} events in all")
    except AssertionError:
        got = seen + second.tasks()
        missing = sorted(set(TaskStatusChange.objects.values_list("id", flat=True)) - {e["id"] for e in got})
        raise AssertionError(
            f"first {len(seen)} (last id {seen[-1]['id']}), second {len(second.tasks())} "
            f"(ids {[e['id'] for e in second.tasks()[:3]]}..{[e['id'] for e in second.tasks()[-3:]]}), "
            f"second done={second.done.is_set()} events={[e.event for e in second.events[-3:]]}; "
            f"missing ids {missing[:20]}"
        ) from None
    time.sleep(0.5)  # anything extra would come now
    second.close()
    events = seen + second.tasks()

    ids = [e["id"] for e in events]
    assert len(events) == total, f"{len(events)} events, {total} expected"
    assert ids == sorted(set(ids)), "event ids must be strictly increasing: nothing twice, in order"
    by_task: dict[str, list[tuple[str, str, str]]] = {}
    for e in events:
        by_task.setdefault(e["task_id"], []).append((e["kind"], e["from_status"], e["to_status"]))
    assert sorted(by_task) == task_ids
    wrong = {t: kinds for t, kinds in by_task.items() if kinds != EXPECTED}
    assert not wrong, f"{len(wrong)} tasks with events out of order or missing, e.g. {next(iter(wrong.items()))}"
    progress = [e["progress"]["percent"] for e in events if e["kind"] == "progress"]
    assert progress == [50.0] * TASKS  # the first in_progress is a status change; its data is on the task
    assert {e["task_type"] for e in events} == {TYPE}
    # The stream says what the history table says, row for row.
    stored = list(TaskStatusChange.objects.filter(task__task_type=TYPE).order_by("id").values_list("id", "task_id"))
    assert [(e["id"], e["task_id"]) for e in events] == stored


def test_filters_and_a_node_account_sees_only_its_own_tasks(server: Server, django_user_model: Any) -> None:
    from tasks_app.fleet.services import cluster_create, node_create
    from tasks_app.ops.accounts import node_account_ensure, token_issue
    from tasks_app.tasks.models import GlobalTask

    node = node_create(cluster=cluster_create(name="evc"), name="evn1", transport="queue", state="online")
    node_token = token_issue(user=node_account_ensure(node=node))
    everyone = Reader(server)
    typed = Reader(server, params={"task_type": "kind-b", "task_status": "pending"})
    as_node = Reader(Server(server.base_url, server.log, node_token))
    with httpx.Client(timeout=30, headers=server.headers()) as http:
        for task_id, task_type in (("f-1", "kind-a"), ("f-2", "kind-b")):
            resp = http.post(f"{server.base_url}/api/v1/tasks/", json={"task_id": task_id, "task_type": task_type})
            assert resp.status_code == 201, resp.text
        resp = http.put(f"{server.base_url}/task/f-2", json={"task_status": "in_progress"})
        assert resp.status_code == 200, resp.text
    # A task on the node's own queue: it is the node's, and only that one reaches the node's stream.
    GlobalTask.objects.filter(pk="f-1").update(node="evn1")
    resp = httpx.put(f"{server.base_url}/task/f-1", json={"task_status": "failed"},
                     headers=server.headers(), timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    wait_until(lambda: len(everyone.tasks()) >= 4, 30, "four events on the unfiltered stream")
    wait_until(lambda: len(as_node.tasks()) >= 1, 30, "the node's event")
    time.sleep(0.5)
    for reader in (everyone, typed, as_node):
        reader.close()
    assert [(e["task_id"], e["kind"], e["to_status"]) for e in everyone.tasks()] == [
        ("f-1", "created", "pending"), ("f-2", "created", "pending"), ("f-2", "status", "in_progress"),
        ("f-1", "status", "failed"),
    ]  # fmt: skip
    assert [(e["task_id"], e["to_status"]) for e in typed.tasks()] == [("f-2", "pending")]
    # Scope is the task's node now: f-1's creation, read by the hub after the task was put on the node,
    # may be in the node's stream too; f-2 never is.
    mine = as_node.tasks()
    assert {(e["task_id"], e["node"], e["cluster"]) for e in mine} == {("f-1", "evn1", "evc")}
    assert mine[-1]["to_status"] == "failed"


def test_bad_requests_are_400s_that_name_the_problem_and_strangers_get_401(server: Server) -> None:
    url = f"{server.base_url}/api/v1/events/"
    with httpx.Client(timeout=30, headers=server.headers()) as http:
        cases = {
            "task_status=done": ("task_status", "'done' is not a status"),
            "cluster=nowhere": ("cluster", "no cluster is named 'nowhere'"),
            "after=-1": ("after", "must be an event id"),
            "timeout=x": ("timeout", "must be a number"),
            "colour=red": ("colour", "Unknown query parameter"),
        }
        for query, (field, message) in cases.items():
            resp = http.get(f"{url}?{query}", headers={"Accept": "text/event-stream"})
            assert resp.status_code == 400, (query, resp.status_code, resp.text)
            assert message in " ".join(resp.json()[field]), (query, resp.text)
        resp = http.get(url, headers={"Last-Event-ID": "abc"})
        assert resp.status_code == 400 and "Last-Event-ID" in resp.json(), resp.text
        # An empty Last-Event-ID is no id at all (the schema says so): live events from now.
        resp = http.get(f"{url}?timeout=0", headers={"Last-Event-ID": ""})
        assert resp.status_code == 200 and [e.event for e in parse(resp.text.splitlines())] == ["live", "end"]
    resp = httpx.get(url, timeout=30)
    assert resp.status_code == 401, resp.text
    assert "credentials" in resp.json()["detail"].lower()


def test_a_stream_ends_when_its_time_is_up_and_says_where_it_stopped(server: Server) -> None:
    resp = httpx.get(f"{server.base_url}/api/v1/events/?timeout=0.3", headers=server.headers(), timeout=30)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = list(parse(resp.text.splitlines()))
    assert [e.event for e in events] == ["live", "end"]
    assert json.loads(events[1].data)["last_event_id"] == json.loads(events[0].data)["last_event_id"] >= 0
    # DRF's `format`, which the OpenAPI document lists, is taken (schemathesis sent ?format=json).
    resp = httpx.get(f"{server.base_url}/api/v1/events/?timeout=0.3&format=json", headers=server.headers(), timeout=30)
    assert resp.status_code == 200, resp.text
    assert [e.event for e in parse(resp.text.splitlines())] == ["live", "end"]


@pytest.fixture
def small_server(child_env: dict[str, str], tmp_path: Path, operator_token: str) -> Iterator[Server]:
    yield from _serve(child_env, tmp_path, operator_token, TASKHUB_EVENTS_BUFFER="20", TASKHUB_EVENT_STREAMS="2")


def test_a_client_that_falls_behind_is_cut_off_and_resumes_without_loss(small_server: Server) -> None:
    server = small_server
    reader = Reader(server)
    task_ids = [f"cut-{i:03d}" for i in range(200)]
    _create(server, task_ids)  # 200 events at once: more than the 20 a stream may have waiting
    assert reader.done.wait(30), "the stream was not cut off"
    assert reader.events[-1].event == "cutoff", [e.event for e in reader.events[-3:]]
    last = json.loads(reader.events[-1].data)["last_event_id"]
    got = reader.tasks()
    assert all(e["id"] <= last for e in got)
    resumed = Reader(server, last_id=str(last))
    wait_until(lambda: len(got) + len(resumed.tasks()) >= 200, 30, "the rest after resuming")
    time.sleep(0.3)
    resumed.close()
    assert sorted(e["task_id"] for e in got + resumed.tasks()) == task_ids


def test_streams_beyond_the_limit_are_429_and_the_rest_of_the_api_is_served(small_server: Server) -> None:
    server = small_server
    open_ = [Reader(server), Reader(server)]
    resp = httpx.get(f"{server.base_url}/api/v1/events/", headers=server.headers(), timeout=10)
    assert resp.status_code == 429, resp.text
    assert "TASKHUB_EVENT_STREAMS" in resp.json()["detail"] and resp.headers["Retry-After"]
    listed = httpx.get(f"{server.base_url}/api/v1/tasks/", headers=server.headers(), timeout=10)
    assert listed.status_code == 200 and listed.json()["results"] == []
    for r in open_:
        r.close()
    # A closed stream gives its slot back.
    wait_until(
        lambda: httpx.get(f"{server.base_url}/api/v1/events/?timeout=0", headers=server.headers(), timeout=10)
        .status_code == 200, 15, "a slot to be free again",
    )  # fmt: skip


@pytest.fixture
def stuck_server(child_env: dict[str, str], tmp_path: Path, operator_token: str) -> Iterator[Server]:
    yield from _serve(child_env, tmp_path, operator_token, TASKHUB_EVENT_STREAMS="1",
                      TASKHUB_EVENTS_SEND_TIMEOUT_SECONDS="2")  # fmt: skip


def test_a_client_that_stops_reading_loses_its_stream_and_the_slot_is_free_again(stuck_server: Server) -> None:
    """A client that reads nothing blocks the server's writes once the socket buffers are full; the write
    times out, and the one stream slot of this server is free for the next client."""
    server = stuck_server
    _create(server, [f"stuck-{i:05d}" for i in range(20_000)])  # ~7 MB of catch-up: more than the buffers
    port = int(server.base_url.rsplit(":", 1)[1])
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
    stuck.sendall(
        f"GET /api/v1/events/?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {server.token}\r\n\r\n"
        .encode()
    )  # fmt: skip
    assert stuck.recv(64).startswith(b"HTTP/1.1 200"), "the stuck client's stream did not open"

    def second_stream() -> int:
        resp = httpx.get(f"{server.base_url}/api/v1/events/?timeout=0", headers=server.headers(), timeout=10)
        return resp.status_code

    try:
        assert second_stream() == 429  # the only slot is the stuck client's
        wait_until(lambda: second_stream() == 200, 30, "the stuck stream's write to time out and free its slot")
    finally:
        stuck.close()


def test_a_row_committed_late_below_a_visible_one_is_not_skipped(server: Server) -> None:
    """PostgreSQL gives history ids when rows are inserted and shows rows when they commit: a transaction
    holding a lower id that commits after a higher one is visible must still reach the stream, in id order."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids become visible in order")
    from django.db import transaction

    from tasks_app.tasks.services import task_create

    reader = Reader(server)
    holding, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                task_create(task_id="late-low", task_type="gap_test", task_status="pending")
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert holding.wait(30)
    with httpx.Client(timeout=30, headers=server.headers()) as http:
        resp = http.post(f"{server.base_url}/api/v1/tasks/", json={"task_id": "early-high", "task_type": "gap_test"})
        assert resp.status_code == 201, resp.text
    time.sleep(1.0)  # many polls of the tail: it must hold early-high back while late-low's transaction runs
    assert reader.tasks() == [], "an event above an undecided gap was sent"
    release.set()
    writer.join(30)
    wait_until(lambda: len(reader.tasks()) >= 2, 30, "both creations")
    reader.close()
    got = [(e["task_id"], e["id"]) for e in reader.tasks()]
    assert [t for t, _ in got] == ["late-low", "early-high"] and got[0][1] < got[1][1]


def test_the_web_process_holds_at_most_its_pool_of_connections_after_many_streams(server: Server) -> None:
    """gunicorn.conf.py gives each process 8 + 64 threads; without a pool each thread that once served a
    request would keep a connection (CONN_MAX_AGE), more than PostgreSQL allows across two processes."""
    if connection.vendor != "postgresql":
        pytest.skip("connections are PostgreSQL's concern")
    readers = [Reader(server) for _ in range(30)]
    for reader in readers:
        reader.close()
    # The server notices a closed stream at its next keepalive write (every 5 s, events.py); only then are
    # the 30 threads idle and handed ordinary requests in turn.
    time.sleep(6.5)
    with httpx.Client(timeout=30, headers=server.headers()) as http:
        for _ in range(120):  # handed to the idle threads in turn: each of the 30 serves some
            assert http.get(f"{server.base_url}/api/v1/tasks/", headers={"Connection": "close"}).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (others,) = cursor.fetchone()
    assert others <= 10, f"{others} connections from the web process; its pool holds at most GUNICORN_THREADS + 2"
