"""taskhub's processes as production runs them, on loopback: gunicorn with the shipped gunicorn.conf.py, two
writers, the scheduler and three nodes, each of which an experiment may kill and start again by name.

The set-up follows `manage.py run_stack` (tasks_app/management/commands/run_stack.py): a cluster whose nodes
are registered with their data directories before their workers start, and a service account's token for
the HTTP API."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from faults import procs
from faults.infra import wait_for

CLUSTER = "faults"
NODES = ("node1", "node2", "node3")
WRITERS = ("writer1", "writer2")
SERVICE_ACCOUNT = "faults"
HANDLER_MODULE = "faults.handlers"
# Settings of the surrounding shell that would point a child elsewhere than the suite's own instances.
_FOREIGN = ("TASKHUB_", "CELERY_", "GUNICORN_", "DJANGO_")
_FOREIGN_NAMES = {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "LOG_LEVEL", "STATIC_ROOT", "DEBUG", "ALLOWED_HOSTS"}


def child_env(base: Path, redis_url: str, database_url: str) -> dict[str, str]:
    """The environment of every taskhub process of the run: its Redis, its database, its var dir, and the
    suite's task types (faults/handlers.py) loaded by the server and the nodes alike."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN) and k not in _FOREIGN_NAMES}
    env.update(
        DJANGO_SETTINGS_MODULE="taskhub.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        TASKHUB_VAR_DIR=str(base / "var"),
        TASKHUB_HANDLER_MODULES=HANDLER_MODULE,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Role:
    """One process of the stack, by name; `proc` is its current incarnation."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_offset: int = 0
    restarts: int = field(default=0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Stack:
    def __init__(self, base: Path, redis_url: str, database_url: str) -> None:
        self.base = base
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = child_env(base, redis_url, database_url)
        self.web_port = procs.free_port()
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self.token = ""
        py, manage = sys.executable, str(procs.ROOT / "manage.py")
        web_env = dict(self.env, GUNICORN_BIND=f"127.0.0.1:{self.web_port}", WEB_CONCURRENCY="2")
        gunicorn = [py, "-m", "gunicorn", "-c", str(procs.ROOT / "gunicorn.conf.py"), "taskhub.wsgi:application"]
        self.roles: dict[str, Role] = {"web": self._role("web", gunicorn, web_env)}
        for name in WRITERS:
            # INFO: the writer logs "writer started" once it reads the stream (what ready() waits for).
            self.roles[name] = self._role(name, [py, manage, "run_writer"], dict(self.env, LOG_LEVEL="INFO"))
        self.roles["scheduler"] = self._role("scheduler", [py, manage, "run_scheduler", "--loglevel", "WARNING"])
        for node in NODES:
            argv = [py, "-m", "workers", node, "--data-dir", str(self.node_dir(node)), "--loglevel", "WARNING"]
            self.roles[node] = self._role(node, argv)

    def _role(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Role:
        return Role(name, argv, env or self.env, self.logs / f"{name}.log")

    def node_dir(self, node: str) -> Path:
        return self.base / "nodes" / node

    # --- set-up ------------------------------------------------------------------------------------

    def migrate(self) -> None:
        done = subprocess.run(
            [sys.executable, str(procs.ROOT / "manage.py"), "migrate", "--noinput", "-v0"],
            env=self.env, cwd=procs.ROOT, capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {(done.stderr or done.stdout).decode()[-3000:]}")

    def register(self) -> None:
        """The cluster and its nodes (as run_stack registers the demo cluster), and the service account's
        token. In this process: its Django settings point at the run's database (faults/__main__.py)."""
        from tasks_app.fleet import services as cluster_services
        from tasks_app.ops import accounts

        cluster = cluster_services.cluster_ensure(name=CLUSTER)
        for node in NODES:
            cluster_services.node_register(cluster=cluster, name=node, data_dir=str(self.node_dir(node)))
        self.token = accounts.token_issue(user=accounts.service_account_ensure(name=SERVICE_ACCOUNT))

    # --- processes ----------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        role = self.roles[name]
        role.log_offset = role.log.stat().st_size if role.log.exists() else 0
        role.started_at = time.time()
        role.proc = procs.spawn(role.argv, role.env, role.log)

    def start_all(self) -> None:
        for name in self.roles:
            self.start(name)
        for name in self.roles:
            self.wait_ready(name)

    def sigkill(self, name: str) -> None:
        role = self.roles[name]
        if role.proc is not None:
            procs.kill(role.proc)

    def restart(self, name: str, *, wait: bool = True) -> None:
        role = self.roles[name]
        if role.running and role.proc is not None:
            procs.stop(role.proc)
        role.restarts += 1
        self.start(name)
        if wait:
            self.wait_ready(name)

    def ensure_up(self) -> list[str]:
        """Start again whatever is not running (a child that died by itself). Returns their names."""
        dead = [name for name, role in self.roles.items() if not role.running]
        for name in dead:
            self.restart(name)
        return dead

    def stop_all(self) -> None:
        for role in reversed(list(self.roles.values())):
            if role.proc is not None:
                procs.stop(role.proc)

    # --- readiness ----------------------------------------------------------------------------------

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        role = self.roles[name]

        def ready() -> bool:
            if not role.running:
                raise RuntimeError(f"{name} exited ({self._exit_code(role)}): {self.log_tail(name)}")
            if name == "web":
                return self._healthy()
            if name in WRITERS:
                return "writer started" in self._new_log(role)
            if name in NODES:
                return self._beat_since(name, role.started_at)
            return time.time() - role.started_at > 2.0  # the scheduler says nothing at WARNING

        wait_for(ready, f"{name} (log {role.log})", timeout)

    @staticmethod
    def _exit_code(role: Role) -> int | None:
        return None if role.proc is None else role.proc.poll()

    def _new_log(self, role: Role) -> str:
        with role.log.open("rb") as f:
            f.seek(role.log_offset)
            return f.read().decode(errors="replace")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return self._new_log(self.roles[name])[-chars:]

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=3)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            return status == 200
        except OSError:
            return False

    @staticmethod
    def node_alive(node: str) -> bool:
        """The node's heartbeat key is there (what peers and the dead-node sweep ask)."""
        import redis

        from workers.protocol.liveness import alive

        try:
            return alive(node)
        except redis.RedisError:
            return False

    @staticmethod
    def _beat_since(node: str, since: float) -> bool:
        """The node's heartbeat key was written by this incarnation (a killed one's lingers until its TTL)."""
        import redis

        from workers.protocol import keys
        from workers.protocol.connection import client

        try:
            raw = client().get(keys.alive_key(node))
        except redis.RedisError:
            return False
        if not isinstance(raw, bytes | str):
            return False
        return float(json.loads(raw).get("ts", 0)) >= since
