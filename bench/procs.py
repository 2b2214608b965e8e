"""Child processes (gunicorn, the writer): started in their own process groups, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.config import PYTHON, ROOT

_children: list[subprocess.Popen[bytes]] = []
LOG_DIR = Path(tempfile.mkdtemp(prefix="taskhub-bench-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = LOG_DIR / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _children.append(proc)
    return proc, log


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the child's process group (gunicorn's workers too), SIGKILL after the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        # The leader is gone; make sure no orphaned worker of its group lingers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_children)):
        stop(proc)


class Server:
    """`gunicorn taskhub.wsgi:application` on 127.0.0.1, with the given settings module."""

    def __init__(self, name: str, env: dict[str, str], workers: int, ready_path: str) -> None:
        self.name = name
        self.port = free_port()
        self.host = "127.0.0.1"
        argv = [
            PYTHON, "-m", "gunicorn", "taskhub.wsgi:application",
            "--bind", f"{self.host}:{self.port}",
            "--workers", str(workers),
            # gunicorn.conf.py (read from ROOT) ships gthread with 8 threads, and gunicorn turns "sync" into
            # gthread whenever threads > 1: pin one thread so these stay the sync workers the report names.
            "--worker-class", "sync",
            "--threads", "1",
            "--backlog", "2048",
            "--log-level", "warning",
        ]  # fmt: skip
        self.proc, self.log = spawn(f"gunicorn-{name}", argv, env)
        self._wait_ready(ready_path)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.name}) exited: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn ({self.name}) not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
