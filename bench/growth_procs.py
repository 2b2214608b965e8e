"""(g) Node workers by the dozen, and what processes cost: CPU seconds and RSS from /proc, the Redis
server's CPU from INFO, the bench database's PostgreSQL backends' CPU.

On a 2-core machine, CPU per unit of work is what bounds throughput, so every figure of (g) comes with
the CPU it took, per process kind."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.config import PYTHON, ROOT, Config, child_env
from bench.procs import LOG_DIR, spawn, stop

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        return (int(after_name[11]) + int(after_name[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KB / 1024
    except (OSError, IndexError, ValueError):
        return 0.0


def own_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def redis_cpu(client: redis.Redis) -> float:
    """The Redis server's CPU seconds: the whole server, so other users of it land here too."""
    info: Any = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def backend_cpu(conn: psycopg.Connection[Any], exclude: set[int]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the bench database, but `exclude`."""
    pids = [int(r[0]) for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    ).fetchall()]  # fmt: skip
    return {pid: proc_cpu(pid) for pid in pids if pid not in exclude}


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


class BackendMeter:
    """CPU of the bench database's PostgreSQL backends over an interval. Backends come and go within
    it (a thread's connection closes, the writer reconnects every CONN_MAX_AGE), so they are sampled
    as it runs: each counts from the start (or from 0, if it connected later) to its last sample."""

    def __init__(self, conn: psycopg.Connection[Any], exclude: set[int]) -> None:
        self.conn, self.exclude = conn, exclude
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def start(self) -> None:
        self.base = backend_cpu(self.conn, self.exclude)
        self.last = dict(self.base)

    def sample(self) -> None:
        self.last.update(backend_cpu(self.conn, self.exclude))

    def total(self) -> float:
        self.sample()
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.last.items())


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")


def start_writer(cfg: Config) -> Child:
    env = child_env(cfg)
    env["LOG_LEVEL"] = "INFO"  # its "writer started" line says it is up
    proc, log = spawn("growth-writer", [PYTHON, str(ROOT / "manage.py"), "run_writer"], env)
    child = Child("run_writer", proc, log)
    deadline = time.monotonic() + 60
    while "writer started" not in log.read_text():
        child.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"run_writer not up after 60 s: {log.read_text()[-1000:]}")
        time.sleep(0.05)
    return child


def start_nodes(cfg: Config, names: list[str], max_s: float) -> list[Child]:
    """`manage.py run_node <name>` for each, all at once; returns when every one heartbeats."""
    from workers.protocol.liveness import alive

    env = child_env(cfg)
    env["TASKHUB_VAR_DIR"] = str(LOG_DIR / "growth" / "var")  # nothing of the bench lands in the project's var/
    children = []
    for name in names:
        argv = [PYTHON, str(ROOT / "manage.py"), "run_node", name, "--data-dir", str(LOG_DIR / "growth" / name),
                "--loglevel", "WARNING"]  # fmt: skip
        proc, log = spawn(f"growth-{name}", argv, env)
        children.append(Child(name, proc, log))
    waiting = set(names)
    deadline = time.monotonic() + max_s
    while waiting:
        for child in children:
            child.check()
        waiting = {n for n in waiting if not alive(n)}
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} node workers not up after {max_s:.0f} s, e.g. {sorted(waiting)[:3]}")
        time.sleep(0.2)
    return children


def stop_many(children: list[Child], grace: float = 15.0) -> None:
    """SIGTERM every one first, then wait: fifty warm shutdowns at once, not one after another."""
    for child in children:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        stop(child.proc, grace=1.0)  # SIGKILL what is left; forgets the child either way
