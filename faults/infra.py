"""The suite's own Redis and PostgreSQL: private instances on free loopback ports, with their files in the
run's temporary directory, which the experiments may kill, shut down and restart. The shared Redis and
PostgreSQL of the machine are never touched."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from faults import procs

PG_USER = "faults"  # the superuser initdb creates in the private cluster (trust auth, loopback only)
PG_DATABASE = "taskhub"
START_SECONDS = 30.0


def wait_for(
    check: Callable[[], object], what: str, timeout: float = START_SECONDS, state: Callable[[], str] | None = None
) -> None:
    """Poll check() every 50 ms until it is true; RuntimeError after `timeout`, saying `state()` if given
    (what was found instead, so a failed run says why without its logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    found = f" (found: {state()})" if state is not None else ""
    raise RuntimeError(f"{what} not ready after {timeout:g} s{found}")


class PrivateRedis:
    """redis-server on 127.0.0.1:<port>, AOF with appendfsync everysec unless `appendonly` is false.
    Restarts keep the port and the directory, so every client finds it again, with what AOF kept."""

    def __init__(self, base: Path, *, appendonly: bool = True) -> None:
        from taskhub.devstack import redis_server_binary

        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = redis_server_binary()
        self.appendonly = appendonly
        self.port = procs.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else ["--appendonly", "no"]
        return [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--save", "", *aof, "--loglevel", "warning",
        ]  # fmt: skip

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=5)

    def up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.proc = procs.spawn(self._argv(), dict(os.environ), self.dir / "redis.log")
        wait_for(lambda: self.up() or self._exited(), f"redis-server on port {self.port}")
        if not self.up():
            raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def sigkill(self) -> None:
        if self.proc is not None:
            procs.kill(self.proc)

    def shutdown(self) -> None:
        """A clean SHUTDOWN (AOF flushed), as an operator's restart does; waits for the process to go."""
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                procs.kill(self.proc)
            procs.forget(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)


def postgres_bindir() -> Path | None:
    """Where initdb, postgres and pg_ctl are: the newest /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4] or 0))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def postgres_user() -> str | None:
    """The account PostgreSQL runs as: ourselves, or (PostgreSQL refuses root) the `postgres` account."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise RuntimeError("running as root and there is no `postgres` account to run PostgreSQL as") from None


class PrivatePostgres:
    """A cluster of its own (initdb into the run's directory), served by `postgres` on 127.0.0.1:<port>
    with no Unix socket. `stop_immediate` is `pg_ctl -m immediate stop`: a crash, recovered at restart."""

    def __init__(self, base: Path, bindir: Path) -> None:
        self.bindir = bindir
        self.user = postgres_user()
        self.dir = base / "postgres"
        self.data = self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            # The run's directory is root's: let the postgres account through to its own part of it.
            base.chmod(0o711)
            account = pwd.getpwnam(self.user)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.port = procs.free_port()
        self.url = f"postgres://{PG_USER}@127.0.0.1:{self.port}/{PG_DATABASE}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]], cwd=self.dir, user=self.user, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {(done.stderr or done.stdout).decode()[-2000:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(self._dsn("postgres"), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")

    def _dsn(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def up(self) -> bool:
        try:
            with psycopg.connect(self._dsn("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self) -> None:
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self.proc = procs.spawn(
            argv, {"PATH": os.environ.get("PATH", "")}, self.dir / "postgres.log", user=self.user, cwd=self.dir,
            stop_signal=signal.SIGINT,
        )  # fmt: skip
        wait_for(lambda: self.up() or (self.proc is not None and self.proc.poll() is not None), "PostgreSQL")
        if not self.up():
            raise RuntimeError(f"PostgreSQL exited: {(self.dir / 'postgres.log').read_text()[-2000:]}")

    def stop_immediate(self) -> None:
        """`pg_ctl -m immediate stop`: every backend dies at once, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                procs.kill(self.proc)
            procs.forget(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
