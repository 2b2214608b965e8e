from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MANAGE, ROOT


def free_port() -> int:
    """A TCP port free on loopback now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_manage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A manage.py child in its own process group, output to a log file the test can show."""
    handle = log.open("wb")
    return subprocess.Popen(
        [*MANAGE, *args], env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def start_gunicorn(
    env: dict[str, str], log: Path, base_url: str, ready_path: str = "/healthz"
) -> subprocess.Popen[bytes]:
    """`gunicorn taskhub.wsgi:application` with the shipped gunicorn.conf.py (read from ROOT), as the Docker
    image runs it; `env` sets GUNICORN_BIND to `base_url`'s loopback port. Returns once `ready_path`
    answers 200; the caller stops it (stop())."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "taskhub.wsgi:application"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base_url}{ready_path}", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, 30, f"gunicorn to answer {ready_path}")
    except AssertionError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def node_report(task_id: str, status: str, data: dict[str, Any] | None = None, *, run_id: str | None = None) -> Any:
    """What a node's report on a task's current run does once a writer applies it (the transition
    function, as a node: Origin.NODE with the run id). `run_id` names another run (an old one, say)."""
    from tasks_app.tasks.models import GlobalTask
    from tasks_app.tasks.transitions import task_transition
    from workers.protocol.messages import Origin, StatusUpdate

    run = run_id if run_id is not None else GlobalTask.objects.values_list("run_id", flat=True).get(pk=task_id)
    update = StatusUpdate(task_id, status, data, source="node:test", run_id=run, origin=Origin.NODE)
    return task_transition(update=update)


def unpublished(task: Any) -> Any:
    """The task as a create whose publish failed (the broker down) leaves it: dispatched_at cleared, so no
    node can have it. (A test's creates never publish: on_commit does not run inside its transaction.)"""
    from tasks_app.tasks.models import GlobalTask

    GlobalTask.objects.filter(pk=task.task_id).update(dispatched_at=None)
    task.refresh_from_db()
    return task


def start_node_worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m workers <args>` (a node worker, under the node's settings), like start_manage."""
    import sys

    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "workers", *args],
        env=env,
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
