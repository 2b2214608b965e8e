"""Dependencies down (issue 9, "fast, honest answers"): with Redis or the database gone, every call
answers promptly, and says so: never a hang, never Django's HTML 500.

Redis: a real web server (gunicorn, as in production) on this test's database and a private redis-server
of this test's own (never the shared one, which other runs use), which is then
  - killed (SIGKILL): its port refuses connections, and
  - frozen (SIGSTOP): its port still accepts and nothing answers, as a hung or partitioned Redis does;
    only here are the connect and socket timeouts paid, so only here can a call be held for seconds.
A tracked create is a database write and succeeds; an executed create commits and stays pending for the
sweep to publish; /task_update, which cannot queue its update, is a 503; /healthz names Redis.

The database: each surface in this process, with the Django connection pointed where no database is (see
database_unreachable), asserting its 503 JSON envelope, Retry-After and one warning in the log.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.db import IntegrityError, connections
from django.http import HttpResponse
from django.test import Client, RequestFactory
from rest_framework.authtoken.models import Token

from taskhub.devstack import free_port, redis_server_binary
from tasks_app.errors import DATABASE_DOWN
from tasks_app.fleet.services import cluster_ensure, node_register
from tasks_app.middleware import DatabaseUnavailableMiddleware
from tasks_app.models import GlobalTask
from tasks_app.ops import metrics
from tasks_app.ops.breaker import database_breaker, redis_breaker, server_of
from tests.conftest import database_url
from tests.helpers import start_gunicorn, stop, wait_until

# A liveness bound, not a speed target: before this change a call during a Redis outage paid the 5 s socket
# timeout, and kombu's connection retries on top (up to 7.9 s measured). An answer within 3 s proves that no
# such wait was paid, with room for a loaded CI machine; how fast the answers are is `make faults`' to report.
LIVENESS_BOUND = 3.0


# --- Redis down, under a real server ---------------------------------------------------------------


@contextlib.contextmanager
def private_redis(data: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server on a free loopback port, ours alone; stopped (and thawed first, if frozen) after."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _answers(url), 10, "the private Redis to start")
        yield proc, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_and_server(settings: Any, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A private Redis, and gunicorn (one worker, gunicorn.conf.py) on this test's database and that Redis,
    with taskhub's default timeouts. Yields the Redis process, the server's base URL and its log."""
    with private_redis(tmp_path / "redis") as (redis_proc, redis_url):
        # This process too: anything it does with Redis goes to the private one.
        settings.REDIS_URL = redis_url
        settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
        port = free_port()
        skip = (
            "GUNICORN_CMD_ARGS",
            "GUNICORN_THREADS",
            "TASKHUB_REDIS_SOCKET_TIMEOUT",
            "TASKHUB_REDIS_CONNECT_TIMEOUT",
        )
        env = {k: v for k, v in os.environ.items() if k not in skip}
        env.update(
            DJANGO_SETTINGS_MODULE="taskhub.settings",
            DATABASE_URL=database_url(),
            REDIS_URL=redis_url,
            CELERY_BROKER_URL=redis_url,
            TASKHUB_STREAM_PREFIX=settings.TASKHUB_STREAM_PREFIX,
            GUNICORN_BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY="1",
            GUNICORN_GRACEFUL_TIMEOUT="2",
            TASKHUB_SEED_ANON_NETWORKS="127.0.0.0/8,::1/128",
            # Open for the whole test once tripped, however slow this machine: what is counted below is
            # that the breaker skips, not when it tries again (test_after_a_redis_failure_... has that).
            TASKHUB_REDIS_BREAKER_SECONDS="120",
            PYTHONUNBUFFERED="1",
        )
        log = tmp_path / "server.log"
        base = f"http://127.0.0.1:{port}"
        server = start_gunicorn(env, log, base)
        try:
            yield redis_proc, base, log
        finally:
            stop(server)
            print("--- server log ---", log.read_text(errors="replace")[-20000:], sep="\n")


def timed(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[float, httpx.Response]:
    # A generous client timeout: a call held too long must show as its elapsed time, not as an exception.
    started = time.monotonic()
    response = httpx.request(method, url, json=body, timeout=30)
    return time.monotonic() - started, response


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_with_redis_down_creates_succeed_and_the_rest_answers_503_promptly(
    how: str, redis_and_server: tuple[subprocess.Popen[bytes], str, Path], settings: Any
) -> None:
    redis_proc, base, log = redis_and_server
    node_register(cluster=cluster_ensure(name="outage"), name="outage-node")
    # While Redis is up, an executed create is published: the server holds pooled connections to the broker
    # and to Redis when the outage comes, as a server in production does.
    _, before = timed(
        "POST", f"{base}/task", {"task_type": "noop", "task_data": {"node": "outage-node"}, "execute": True}
    )
    assert before.status_code == 200, before.text
    first = before.json()["data"]["task_id"]
    wait_until(lambda: GlobalTask.objects.get(pk=first).dispatched_at is not None, 10, "the publish before the outage")

    os.kill(redis_proc.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    if how == "killed":
        redis_proc.wait(timeout=10)

    answers: dict[str, tuple[float, httpx.Response]] = {}
    for attempt in (1, 2):  # the second after the first's failures: the breaker's path
        tracked = f"tracked-{how}-{attempt}"
        # Executed first: its publish meets the outage (kombu's path), and opens the breaker for the metrics.
        answers[f"executed {attempt}"] = timed(
            "POST", f"{base}/task", {"task_type": "noop", "task_data": {"node": "outage-node"}, "execute": True}
        )
        answers[f"tracked {attempt}"] = timed(
            "POST", f"{base}/task", {"task_id": tracked, "task_type": "outage_probe", "task_data": {"n": attempt}}
        )
        answers[f"update {attempt}"] = timed(
            "POST", f"{base}/task_update", {"task_id": tracked, "status": "in_progress"}
        )
        answers[f"healthz {attempt}"] = timed("GET", f"{base}/healthz")
    print(f"Redis {how}: seconds per answer", {name: round(elapsed, 2) for name, (elapsed, _) in answers.items()})
    slow = {name: round(elapsed, 2) for name, (elapsed, _) in answers.items() if elapsed >= LIVENESS_BOUND}
    assert not slow, f"answers held past {LIVENESS_BOUND}s with Redis {how}: {slow}"

    for attempt in (1, 2):
        tracked = f"tracked-{how}-{attempt}"
        resp = answers[f"tracked {attempt}"][1]
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"success": True, "data": {"message": "Task created", "task_id": tracked}}
        row = GlobalTask.objects.get(pk=tracked)
        assert (row.task_type, row.task_status, row.task_data, row.node) == (
            "outage_probe",
            "pending",
            {"n": attempt},
            "",
        )

        resp = answers[f"executed {attempt}"][1]
        assert resp.status_code == 200, resp.text
        assert resp.json()["success"] is True and resp.json()["data"]["message"] == "Task created"
        executed = GlobalTask.objects.get(pk=resp.json()["data"]["task_id"])
        # Committed, not published: the sweep publishes it once the broker is back.
        assert (executed.task_status, executed.node, executed.dispatched_at) == ("pending", "outage-node", None)

        resp = answers[f"update {attempt}"][1]
        assert resp.status_code == 503, resp.text
        assert resp.json()["success"] is False
        assert resp.json()["message"].startswith("Task update could not be queued")
        assert resp.headers["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)
        assert GlobalTask.objects.get(pk=tracked).task_status == "pending"  # nothing was queued nor applied

        resp = answers[f"healthz {attempt}"][1]
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["status"] == "degraded" and body["down"] == ["redis"]
        assert body["checks"]["database"] == "ok" and body["checks"]["redis"].startswith("error: ")
        assert resp.headers["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)

    server_log = log.read_text(errors="replace")
    assert "Traceback" not in server_log  # warnings, not stack traces
    # One publish met the outage; after it the breaker skipped the publishes and the metrics (that Redis).
    assert server_log.count("failed (the sweep will retry)") == 1, server_log
    assert server_log.count("the broker failed moments ago (the sweep will retry)") == 1, server_log
    # Counters are sent by each process's flusher thread, never on a request's path (the timings above): it
    # meets the outage at most once, and then the breaker skips that Redis.
    assert server_log.count("metrics not recorded (Redis)") <= 1, server_log


# --- the breaker, in this process ---------------------------------------------------------------------


@pytest.mark.slow
def test_after_a_redis_failure_metrics_skip_redis_until_it_answers_again(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TASKHUB_REDIS_BREAKER_SECONDS = 0.5
    settings.TASKHUB_REDIS_SOCKET_TIMEOUT = 0.3  # the frozen Redis' timeout, paid once below
    with private_redis(tmp_path / "redis") as (proc, url):
        settings.REDIS_URL = url
        settings.TASKHUB_STREAM_PREFIX = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
        server = server_of(url)
        store = redis.Redis.from_url(url)
        os.kill(proc.pid, signal.SIGSTOP)
        with caplog.at_level(logging.DEBUG, logger="tasks_app.ops.metrics"):
            metrics._incr({"failed": 1})  # times out: opens the breaker
            assert redis_breaker.is_open(server)
            metrics._incr({"skipped": 1})  # not tried
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("metrics not recorded (Redis), nor tried again for 0.5s")
        assert any("failed moments ago" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
        os.kill(proc.pid, signal.SIGCONT)

        def counted_again() -> bool:
            metrics._incr({"after": 1})
            return store.hget(metrics.key(), "after") is not None

        # Once its wait is over, the breaker lets a call through, which succeeds and closes it.
        wait_until(counted_again, 10, "a count recorded again")
        assert not redis_breaker.is_open(server)
        assert store.hget(metrics.key(), "skipped") is None  # skipped, never sent
        store.close()  # type: ignore[no-untyped-call]


# --- the database down, each surface -----------------------------------------------------------------


@contextlib.contextmanager
def database_unreachable(tmp_path: Path) -> Iterator[None]:
    """The default connection pointed where no database is, as after a crash or a partition: each query
    opens a new connection, and the driver fails to (sqlite3: a file in a directory that does not exist;
    PostgreSQL: a loopback port nothing listens on). Real driver errors, nothing faked; the outage of a
    real PostgreSQL server under load is `make faults`' experiment (issue 9)."""
    conn = connections["default"]
    saved = copy.deepcopy(conn.settings_dict)
    conn.close()
    if conn.vendor == "sqlite":
        conn.settings_dict["NAME"] = str(tmp_path / "no-such-directory" / "taskhub.sqlite3")
    else:
        conn.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)


SEED, DRF = "seed", "drf"

# (method, path, body, envelope, credentials): every surface, with the credentials that reach it.
SURFACES = [
    ("POST", "/task", {"task_type": "t"}, SEED, "anonymous"),
    ("POST", "/task", {"task_type": "t"}, SEED, "token"),
    ("GET", "/task/{id}", None, SEED, "anonymous"),
    ("PUT", "/task/{id}", {"task_data": {"a": 1}}, SEED, "session"),
    ("DELETE", "/task/{id}", None, SEED, "anonymous"),
    ("GET", "/tasks", None, SEED, "anonymous"),
    ("POST", "/task_update", {"task_id": "{id}", "status": "completed"}, SEED, "anonymous"),
    ("GET", "/api/v1/tasks/", None, DRF, "token"),
    ("POST", "/api/v1/tasks/", {"task_type": "t"}, DRF, "session"),
    ("GET", "/api/v1/tasks/{id}/", None, DRF, "session"),
    ("GET", "/api/v1/clusters/", None, DRF, "token"),
    ("POST", "/api/v1/auth/token/", {"username": "operator", "password": "operator-pw"}, DRF, "anonymous"),
    ("GET", "/metrics", None, DRF, "token"),
    ("GET", "/admin/", None, DRF, "session"),
    ("GET", "/admin/dashboard/", None, DRF, "session"),
    ("GET", "/admin/tasks_app/globaltask/", None, DRF, "session"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path", "body", "envelope", "credentials"),
    SURFACES,
    ids=[f"{m} {p} {c}" for m, p, _, _, c in SURFACES],
)
def test_with_the_database_down_every_surface_answers_503_in_json(
    method: str,
    path: str,
    body: dict[str, Any] | None,
    envelope: str,
    credentials: str,
    operator: Any,
    tmp_path: Path,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task_id = GlobalTask.objects.create(task_id=f"t-{uuid.uuid4().hex[:8]}", task_type="t").task_id
    token = Token.objects.create(user=operator).key
    client = Client(HTTP_AUTHORIZATION=f"Token {token}") if credentials == "token" else Client()
    if credentials == "session":
        client.force_login(operator)
    url = path.replace("{id}", task_id)
    data = json.dumps(body).replace("{id}", task_id) if body is not None else None
    # The first request of a process imports the URLconf and its views: not the outage's time to measure.
    assert client.get(f"/task/{task_id}").status_code == 200

    with database_unreachable(tmp_path), caplog.at_level(logging.INFO):
        started = time.monotonic()
        resp = client.generic(method, url, data or "", content_type="application/json")
        elapsed = time.monotonic() - started

    assert elapsed < LIVENESS_BOUND  # the driver fails at once; nothing retries for seconds
    assert resp.status_code == 503, resp.content[:500]
    assert resp["Content-Type"] == "application/json"
    assert resp["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)
    message = f"The database is unavailable; try again in {settings.TASKHUB_RETRY_AFTER_SECONDS} seconds"
    expected = {"success": False, "message": message} if envelope == SEED else {"detail": message}
    assert resp.json() == expected
    # One warning per failed request, no traceback, and no second line from django.request.
    ours = [r for r in caplog.records if r.name == "tasks_app.api.errors"]
    assert len(ours) == 1 and ours[0].levelno == logging.WARNING and ours[0].exc_info is None
    assert f"{method} {url}" in ours[0].getMessage() and "OperationalError" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert not [r for r in caplog.records if r.exc_info]
    # Nothing was done (no create, change nor delete), and the database answers this process again.
    assert list(GlobalTask.objects.values_list("task_id", "task_data", "task_status")) == [(task_id, {}, "pending")]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_healthz_names_the_database_when_it_is_down(redis_stream: redis.Redis, tmp_path: Path, settings: Any) -> None:
    with database_unreachable(tmp_path):
        started = time.monotonic()
        resp = Client().get("/healthz")
        elapsed = time.monotonic() - started
    assert elapsed < LIVENESS_BOUND
    assert resp.status_code == 503
    assert resp["Retry-After"] == str(settings.TASKHUB_RETRY_AFTER_SECONDS)
    body = resp.json()
    assert body["status"] == "degraded" and body["down"] == ["database"]
    assert body["checks"]["database"].startswith("error: ") and body["checks"]["redis"] == "ok"


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_public_scrape_with_the_database_down_reports_it_as_a_metric(
    redis_stream: redis.Redis, tmp_path: Path
) -> None:
    """Prometheus' way: the scrape answers, and says which source is down. A 503 would drop the Redis
    side too (the update backlog, the dead letters), which is what an operator watches in this outage."""
    with database_unreachable(tmp_path):
        resp = Client().get("/metrics")
    assert resp.status_code == 200
    text = resp.content.decode()
    assert 'taskhub_metrics_source_up{source="database"} 0.0' in text
    assert 'taskhub_metrics_source_up{source="redis"} 1.0' in text
    assert "taskhub_update_stream_backlog 0.0" in text


def test_only_connection_failures_are_503s() -> None:
    """IntegrityError and its kin are bugs or input no check caught: they stay 500s, with tracebacks."""
    middleware = DatabaseUnavailableMiddleware(lambda request: HttpResponse())
    request = RequestFactory().get("/task/x")
    assert middleware.process_exception(request, IntegrityError("duplicate key")) is None
    assert middleware.process_exception(request, ValueError("a bug")) is None
    assert {cls.__name__ for cls in DATABASE_DOWN} == {"OperationalError", "InterfaceError"}


# --- The database down, behind the web's pool ---------------------------------------------------------


class Forwarder:
    """A TCP forwarder on a loopback port to the real PostgreSQL, which the test can cut (its port refuses
    connections and every connection through it is dropped, as when the server dies) and restore. It counts
    the connections it was asked for, so the test sees whether a request tried the database at all."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.attempts = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [*doomed, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            with self._lock:
                self.attempts += 1
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def pooled(settings: Any) -> Iterator[tuple[Any, Forwarder]]:
    """A connection to this test's PostgreSQL database with the web's pool and backend (taskhub/settings.py
    with TASKHUB_DB_POOL_SIZE), reached through a Forwarder."""
    default = connections["default"]
    if default.vendor != "postgresql":
        pytest.skip("the web's connection pool is PostgreSQL's")
    from tasks_app.postgres.base import DatabaseWrapper

    settings.TASKHUB_DB_BREAKER_SECONDS = 0.5
    forwarder = Forwarder((default.settings_dict["HOST"] or "127.0.0.1", int(default.settings_dict["PORT"] or 5432)))
    settings_dict = copy.deepcopy(default.settings_dict)
    settings_dict.update(HOST="127.0.0.1", PORT=str(forwarder.port), CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True)
    settings_dict["ENGINE"] = "tasks_app.postgres"
    settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 2, "timeout": 3}}
    db = DatabaseWrapper(settings_dict, alias=f"pooled-{uuid.uuid4().hex[:8]}")
    try:
        yield db, forwarder
    finally:
        db.close()
        if db.alias in db._connection_pools:
            db.close_pool()
        forwarder.cut()
        database_breaker.succeeded(db.alias)


def query(db: Any) -> tuple[float, Any]:
    """One request's worth: a connection from the pool, a query, the connection given back."""
    started = time.monotonic()
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
            result: Any = cursor.fetchone()[0]
    except DATABASE_DOWN as exc:
        result = exc
    finally:
        db.close()
    return time.monotonic() - started, result


@pytest.mark.django_db
def test_behind_the_pool_a_database_that_is_down_is_refused_at_once_and_used_again_when_back(
    pooled: tuple[Any, Forwarder],
) -> None:
    db, forwarder = pooled
    assert query(db)[1] == 1

    forwarder.cut()
    # The first request finds the pool's connection dead, and the pool's attempt to replace it failing: after
    # one slice of its wait, a direct connect confirms the database cannot be reached. Before, it waited the
    # pool's whole timeout (3 s here; make faults: 5 s for every request of the outage).
    took, first = query(db)
    assert isinstance(first, DATABASE_DOWN), first
    assert took < 2.0, took
    assert database_breaker.is_open(db.alias)
    # Until the breaker's time is up, the requests after it fail at once, without trying the database.
    attempts = forwarder.attempts
    answers = [query(db) for _ in range(5)]
    assert all(isinstance(result, DATABASE_DOWN) for _, result in answers), answers
    assert max(seconds for seconds, _ in answers) < 0.2, answers
    assert forwarder.attempts == attempts
    # Once the window is over, one request is the breaker's trial: it waits on the pool only briefly
    # (TRIAL_WAIT_SECONDS), not the pool's timeout, and the breaker stays open.
    time.sleep(0.6)
    took, trial = query(db)
    assert isinstance(trial, DATABASE_DOWN) and took < 2.0, (took, trial)
    assert database_breaker.is_open(db.alias)

    forwarder.restore()
    # Once it is back: at most the breaker's 0.5 s of 503s, then a direct connect succeeds and a new pool
    # serves, instead of the old one, whose reconnect may be asleep in its backoff.
    wait_until(lambda: query(db)[1] == 1, 15, "a query through the pool once the database is back")
    assert not database_breaker.is_open(db.alias)


@pytest.mark.django_db
def test_the_breaker_closes_through_the_pool_whatever_a_direct_connect_says(pooled: tuple[Any, Forwarder]) -> None:
    # Opened while the database is up (as when a direct connect met "too many connections"): the next trial
    # takes its connection from the pool, and that is what closes it, not a direct connect.
    db, _ = pooled
    assert query(db)[1] == 1
    database_breaker.failed(db.alias)
    seconds, refused = query(db)
    assert isinstance(refused, DATABASE_DOWN) and seconds < 0.25
    wait_until(lambda: query(db)[1] == 1, 10, "the trial through the pool")
    assert not database_breaker.is_open(db.alias)


@pytest.mark.django_db
def test_replacing_the_pool_never_leaves_another_thread_without_one(pooled: tuple[Any, Forwarder]) -> None:
    # Django's pool property checks for the alias's pool and then reads it; a replacement in between was a
    # KeyError (a 500) in whichever thread was connecting.
    db, _ = pooled
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 2

    def read() -> None:
        while time.monotonic() < stop_at:
            try:
                assert db.pool is not None
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to land in the window
    try:
        for reader in readers:
            reader.start()
        while time.monotonic() < stop_at:
            db._replace_pool()
        for reader in readers:
            reader.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


@pytest.mark.django_db
def test_a_pool_whose_connections_are_all_lent_out_does_not_open_the_breaker(pooled: tuple[Any, Forwarder]) -> None:
    db, _ = pooled
    db.settings_dict["OPTIONS"]["pool"]["max_size"] = 1
    db.settings_dict["OPTIONS"]["pool"]["timeout"] = 0.5
    db.ensure_connection()  # this thread holds the pool's one connection
    try:
        other: list[Any] = []
        waiter = threading.Thread(target=lambda: other.append(query(type(db)(db.settings_dict, alias=db.alias))))
        waiter.start()
        waiter.join(10)
        assert isinstance(other[0][1], DATABASE_DOWN), other  # the pool's timeout: a 503 for that request
        assert not database_breaker.is_open(db.alias)  # but the database is up, and the next request uses it
    finally:
        db.close()
    assert query(db)[1] == 1


@pytest.mark.django_db(transaction=True)
def test_a_server_that_refuses_more_connections_is_not_taken_for_down(pooled: tuple[Any, Forwarder]) -> None:
    # "Too many connections" is an answer from a server that is up: a breaker opened on it would refuse every
    # request of the process while the pool still had connections to give (a reviewer's reproduction).
    db, _ = pooled
    role = f"taskhub_limited_{os.getpid()}"
    with connections["default"].cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        db.settings_dict["USER"] = role
        db.settings_dict["OPTIONS"]["pool"].update(max_size=2, timeout=1)
        db.ensure_connection()  # the role's one connection, held by this thread
        try:
            other: list[Any] = []
            waiter = threading.Thread(target=lambda: other.append(query(type(db)(db.settings_dict, alias=db.alias))))
            waiter.start()
            waiter.join(10)
            assert isinstance(other[0][1], DATABASE_DOWN), other  # no connection to give: a 503 for it
            assert not database_breaker.is_open(db.alias)
        finally:
            db.close()
        assert query(db)[1] == 1
    finally:
        db.close()
        if db.alias in db._connection_pools:
            db.close_pool()
        with connections["default"].cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
