"""Long polls under the shipped production server: a real gunicorn started with gunicorn.conf.py.

Long polls (GET /api/v1/tasks/<id>/?wait=) must neither be killed by gunicorn's worker timeout nor tie up
the threads that serve everything else: each process lets TASKHUB_LONGPOLL_SLOTS of them wait at once and
answers 429 with Retry-After beyond that, and the CLI's watcher polls again after it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.client import Api
from cli.watch import follow_polling
from tests.conftest import ROOT
from tests.helpers import free_port, start_gunicorn, stop, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLOTS = 3
WORKER_TIMEOUT = 3
# Longer than the worker timeout: a sync worker would be killed mid-wait (WORKER TIMEOUT, then a 500).
WAIT = 6


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def gunicorn(child_env: dict[str, str], tmp_path: Path) -> Iterator[Gunicorn]:
    """`gunicorn taskhub.wsgi:application` as the Docker image runs it (gunicorn.conf.py from its working
    directory), one worker on loopback, on this test's database."""
    port = free_port()
    env = {k: v for k, v in child_env.items() if k not in ("GUNICORN_CMD_ARGS", "GUNICORN_THREADS")}
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        GUNICORN_TIMEOUT=str(WORKER_TIMEOUT),
        # Teardown need not wait out long polls a failed test left behind.
        GUNICORN_GRACEFUL_TIMEOUT="2",
        TASKHUB_LONGPOLL_SLOTS=str(SLOTS),
        # PostgreSQL: fewer pooled connections than waiting long polls. The rest is served only because a
        # waiting poll gives its connection back between reads (longpoll.pause).
        TASKHUB_DB_POOL_SIZE="2",
        TASKHUB_SEED_ANON_NETWORKS="127.0.0.0/8",
    )
    log = tmp_path / "gunicorn.log"
    base_url = f"http://127.0.0.1:{port}"
    # /tasks, not /healthz: the slots are what is tested, and the seed list is what must stay served.
    proc = start_gunicorn(env, log, base_url, ready_path="/tasks")
    server = Gunicorn(proc, base_url, log)
    try:
        yield server
    except AssertionError:
        print(server.output()[-5000:])
        raise
    finally:
        stop(proc)


def create_task(server: Gunicorn, task_type: str) -> str:
    resp = httpx.post(
        f"{server.base_url}/task",
        content=json.dumps({"task_type": task_type, "task_data": {"k": "v"}}),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"]["task_id"])


def long_poll(server: Gunicorn, task_id: str, token: str, wait: float) -> tuple[httpx.Response, float]:
    """The answer to one long poll, and how long it took."""
    started = time.monotonic()
    resp = httpx.get(
        f"{server.base_url}/api/v1/tasks/{task_id}/",
        params={"wait": str(wait)},
        headers={"Authorization": f"Token {token}"},
        timeout=WAIT + 30,
    )
    return resp, time.monotonic() - started


def hold_all_slots(
    pool: ThreadPoolExecutor, server: Gunicorn, task_id: str, token: str
) -> list[Future[tuple[httpx.Response, float]]]:
    polls = [pool.submit(long_poll, server, task_id, token, WAIT) for _ in range(SLOTS)]
    # Long enough for every poll to reach the server over loopback and take its slot; not a speed target.
    time.sleep(1.0)
    assert not any(p.done() for p in polls), [p.result()[0].text for p in polls if p.done()]
    return polls


def test_long_polls_outlive_the_worker_timeout_and_leave_threads_for_other_requests(
    gunicorn: Gunicorn, operator_token: str
) -> None:
    task_id = create_task(gunicorn, "longpoll_serving")
    with ThreadPoolExecutor(max_workers=SLOTS + 1) as pool:
        polls = hold_all_slots(pool, gunicorn, task_id, operator_token)

        listing = httpx.get(f"{gunicorn.base_url}/tasks", params={"task_type": "longpoll_serving"}, timeout=10)
        assert not any(p.done() for p in polls), "the list was answered only after the long polls ended"
        assert listing.status_code == 200, listing.text
        assert [t["task_id"] for t in listing.json()["data"]] == [task_id]

        busy, _ = long_poll(gunicorn, task_id, operator_token, WAIT)
        assert not any(p.done() for p in polls), "the extra long poll was answered only after the others ended"
        assert busy.status_code == 429, busy.text
        assert busy.headers["Retry-After"] == "2"
        detail = busy.json()["detail"]
        assert f"All {SLOTS} long-poll slots" in detail and "TASKHUB_LONGPOLL_SLOTS" in detail

        for poll in polls:
            resp, took = poll.result()
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert (body["task_id"], body["task_type"], body["task_status"]) == (task_id, "longpoll_serving", "pending")
            # Unchanged, so each waited its full time: longer than gunicorn's timeout, and not killed for it.
            assert took >= WORKER_TIMEOUT

    assert "WORKER TIMEOUT" not in gunicorn.output()
    # The slots were released: a long poll is served again (and answers at once for a finished task).
    finished = httpx.put(
        f"{gunicorn.base_url}/task/{task_id}",
        content=json.dumps({"task_status": "completed"}),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert finished.status_code == 200, finished.text
    again, _ = long_poll(gunicorn, task_id, operator_token, WAIT)
    assert again.status_code == 200, again.text
    assert again.json()["task_status"] == "completed"


def test_cli_watch_polls_again_after_a_429(
    gunicorn: Gunicorn, operator_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_task = create_task(gunicorn, "longpoll_busy")
    watched = create_task(gunicorn, "longpoll_watched")
    monkeypatch.setenv("TASKHUB_TOKEN", operator_token)
    outcome: dict[str, Any] = {}

    def watch() -> None:
        with Api(gunicorn.base_url) as api:
            try:
                outcome["task"] = follow_polling(
                    api, {"task_id": watched, "task_status": "pending"}, timeout=60, show=False
                )
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

    refused = re.compile(rf'"GET /api/v1/tasks/{watched}/\?wait=[^"]*" 429 ')
    with ThreadPoolExecutor(max_workers=SLOTS) as pool:
        polls = hold_all_slots(pool, gunicorn, busy_task, operator_token)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_until(lambda: refused.search(gunicorn.output()), 10, "the watcher's long poll to be refused")
        assert not any(p.done() for p in polls)
        finished = httpx.put(
            f"{gunicorn.base_url}/task/{watched}",
            content=json.dumps({"task_status": "completed", "task_status_data": {"result": "ok"}}),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert finished.status_code == 200, finished.text
        assert all(p.result()[0].status_code == 200 for p in polls)
        watcher.join(timeout=30)

    assert not watcher.is_alive(), "the watcher did not finish"
    assert "error" not in outcome, outcome.get("error")
    task = outcome["task"]
    assert (task["task_id"], task["task_status"], task["task_status_data"]) == (watched, "completed", {"result": "ok"})
    served = re.compile(rf'"GET /api/v1/tasks/{watched}/\?wait=[^"]*" 200 ')
    log = gunicorn.output()
    first_refusal = refused.search(log)
    assert first_refusal is not None
    assert served.search(log, first_refusal.end()), "no long poll of the watcher was served after its 429"


def test_shipped_defaults_keep_threads_free_for_other_requests() -> None:
    """gunicorn.conf.py's threaded workers and the default slot count, as a fresh process reads them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GUNICORN_THREADS", "TASKHUB_LONGPOLL_SLOTS", "GUNICORN_CMD_ARGS", "TASKHUB_EVENT_STREAMS")
    }
    env["DJANGO_SETTINGS_MODULE"] = "taskhub.settings"
    code = (
        "import json, runpy, django; django.setup(); from django.conf import settings; "
        "conf = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps([conf['worker_class'], conf['threads'], settings.TASKHUB_LONGPOLL_SLOTS, "
        "settings.TASKHUB_EVENT_STREAMS]))"
    )
    for threads, expected_slots in ((None, 6), ("4", 2), ("2", 1)):
        run_env = dict(env, **({"GUNICORN_THREADS": threads} if threads else {}))
        out = subprocess.run(
            [sys.executable, "-c", code], env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )
        worker_class, conf_threads, slots, streams = json.loads(out.stdout.strip().splitlines()[-1])
        assert worker_class == "gthread"
        # Event streams (GET /api/v1/events/) get threads of their own, on top of the ones that serve the rest.
        assert streams == 64
        assert conf_threads == int(threads or 8) + streams
        assert slots == expected_slots


@pytest.mark.parametrize(
    ("wait", "detail"),
    [("soon", "'wait' must be a number of seconds"), ("61", "'wait' must be between 0 and 60 seconds")],
)
def test_a_bad_wait_is_a_400_naming_it(api_client: Any, wait: str, detail: str) -> None:
    from tasks_app.tasks.services import task_create

    task, _ = task_create(task_id=None, task_type="longpoll_checked", task_data={}, source="test")
    resp = api_client.get(f"/api/v1/tasks/{task.task_id}/", {"wait": wait})
    assert resp.status_code == 400
    assert resp.json() == {"detail": detail}
