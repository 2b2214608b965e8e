"""Shared fixtures. Tests use the real Redis (a database number and key prefix of their own) and
the real database pytest-django sets up (SQLite, or PostgreSQL when DATABASE_URL says so)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection

from taskhub import devstack

ROOT = Path(__file__).resolve().parent.parent
# Our own Redis database number, so nothing here touches what other programs keep in db 0.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


REDIS_OK = _redis_reachable()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REDIS_OK and os.environ.get("CI") == "true":
        pytest.exit(f"CI=true and Redis is not reachable at {TEST_REDIS_URL}", returncode=1)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker, so `-m "not redis"` sees these too
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # A test that uses the stream fixture needs Redis whether or not it says so.
        if "redis_stream" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
    if REDIS_OK:
        return
    skip = pytest.mark.skip(reason=f"Redis not reachable at {TEST_REDIS_URL}")
    for item in items:
        # The marker, not item.keywords: a parameter id such as test_x[redis] is a keyword too.
        if item.get_closest_marker("redis") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _event_hub_stopped(django_db_setup: None) -> Iterator[None]:
    """A live_server test's event stream starts this process's event tail (tasks_app/api/event_hub.py), a
    thread with a database connection of its own; stop it before the test database is dropped."""
    yield
    from tasks_app.api.event_hub import HUB

    HUB.stop()


@pytest.fixture
def redis_stream(settings: Any) -> Iterator[redis.Redis]:
    """Points the update stream at a key prefix of this test's own, and removes its keys after."""
    prefix = f"taskhub-test:{uuid.uuid4().hex[:12]}:updates"
    settings.REDIS_URL = TEST_REDIS_URL
    settings.TASKHUB_STREAM_PREFIX = prefix
    client = redis.Redis.from_url(TEST_REDIS_URL)
    yield client
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()  # type: ignore[no-untyped-call]


def database_url() -> str:
    """The URL of the database this test session uses (the test database), for child processes."""
    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    user = sd.get("USER") or ""
    password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 5432}/{sd['NAME']}"


@pytest.fixture
def child_env(redis_stream: redis.Redis, settings: Any) -> dict[str, str]:
    """Environment for a manage.py child process that shares this test's database and stream."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        TASKHUB_STREAM_PREFIX=settings.TASKHUB_STREAM_PREFIX,
        TASKHUB_STREAM_SHARDS=str(settings.TASKHUB_STREAM_SHARDS),
        PYTHONUNBUFFERED="1",
    )
    return env


MANAGE = [sys.executable, str(ROOT / "manage.py")]


OPERATOR_PASSWORD = "operator-pw-for-tests"


@pytest.fixture
def operator(django_user_model: Any) -> Any:
    """A staff user: full access to /api/v1 (README "Access control")."""
    return django_user_model.objects.create_user("operator", password=OPERATOR_PASSWORD, is_staff=True)


@pytest.fixture
def api_client(operator: Any) -> Any:
    """Django's test client, logged in (a session) as the operator."""
    from django.test import Client

    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def operator_token(operator: Any) -> str:
    """The operator's API token, for clients that talk HTTP (the CLI, live servers)."""
    from rest_framework.authtoken.models import Token

    return str(Token.objects.get_or_create(user=operator)[0].key)


# --- a Redis of a test's own ------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own, without persistence, that can be killed and started again
    on the same port (a restart after a crash: everything it held is gone)."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = devstack.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [devstack.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                str(self.dir), "--save", "", "--appendonly", "no"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        from tests.helpers import wait_until  # helpers imports this module

        wait_until(lambda: devstack.redis_alive(self.url), 10, f"the private Redis on port {self.port}")

    def restart_in(self, seconds: float) -> threading.Timer:
        """start() again, on the same port, after `seconds`, from a thread (join the timer that is returned)."""
        timer = threading.Timer(seconds, self.start)
        timer.start()
        return timer

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
