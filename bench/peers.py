"""(d)'s peers: bare Celery in each pool it can run on this machine, and Celery + django-celery-results.

Each peer is one Celery worker, started once for the section on its own queue; a round sends N
no-op tasks to it from the bench's threads and waits until all are done: the bare app's Redis
counter reads N, or the django-celery-results table holds N SUCCESS rows. The strongest
configuration of each kind (the highest median) is the one taskhub's ratios are taken against.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from celery import Celery
from psycopg import sql

from bench import bare_celery, dcr_celery
from bench.config import PYTHON, ROOT, Config, child_env
from bench.procs import spawn

BARE, DCR = "bare", "dcr"
# Taken by every send, as taskhub.execute's keyword arguments; the node and type are (d)'s.
_KWARGS = {"task_type": "noop", "task_data": {"node": "benchnode"}, "node": "benchnode", "attempt": 0}


@dataclass(frozen=True)
class Pool:
    key: str
    argv: tuple[str, ...]
    label: str


# prefork with one child per core, threads as taskhub's node workers run (x4), and solo: one task at
# a time in the worker's own process, no pool hand-off at all, which is what a no-op rewards most.
POOLS = (
    Pool("prefork", ("--pool", "prefork", "--concurrency", "2"), "prefork -c 2"),
    Pool("threads", ("--pool", "threads", "--concurrency", "4"), "threads x4"),
    Pool("solo", ("--pool", "solo"), "solo"),
)
SETTINGS = f"acks_late + reject_on_worker_lost, prefetch x{bare_celery.PREFETCH}, JSON"


class Peer:
    """One peer worker: a kind (bare or dcr) on one pool, with its own queue."""

    def __init__(self, kind: str, pool: Pool) -> None:
        self.kind, self.pool = kind, pool
        self.module = bare_celery if kind == BARE else dcr_celery
        self.app: Celery = self.module.app
        self.queue = f"{self.module.QUEUE_PREFIX}.{pool.key}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.pool.key}"

    @property
    def label(self) -> str:
        what = "bare Celery no-op (INCR)" if self.kind == BARE else "Celery + django-celery-results (track started)"
        return f"{what}, {self.pool.label}"

    @property
    def settings(self) -> str:
        extra = "; results: django-db, CONN_MAX_AGE 60" if self.kind == DCR else "; no results"
        return f"--pool {' '.join(self.pool.argv[1:])}, {SETTINGS}{extra}"

    def start(self, env: dict[str, str]) -> None:
        argv = [
            PYTHON, "-m", "celery", "-A", self.module.__name__, "worker", "-Q", self.queue,
            "--hostname", f"bench-{self.name}@%h", *self.pool.argv,
            "--prefetch-multiplier", str(bare_celery.PREFETCH),
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if self.kind == DCR:
            env = dict(env, DJANGO_SETTINGS_MODULE="bench.settings_dcr")
        self.proc, self.log = spawn(f"e2e-{self.name}", argv, env)

    def send(self, count: int) -> None:
        for _ in range(count):
            tid = str(uuid.uuid4())
            self.app.send_task(self.module.TASK, task_id=tid, kwargs={"task_id": tid, **_KWARGS}, queue=self.queue)

    # --- what a round waits for -------------------------------------------------------------------

    def reset(self, client: Any, poll: psycopg.Connection[Any]) -> None:
        if self.kind == BARE:
            client.set(bare_celery.COUNTER, 0)
        else:
            poll.execute(f"TRUNCATE {dcr_celery.TABLE}")

    def done(self, client: Any, poll: psycopg.Connection[Any], check_failures: bool) -> int:
        if self.kind == BARE:
            return int(client.get(bare_celery.COUNTER) or 0)
        if check_failures:
            row = poll.execute(
                f"SELECT count(*) FILTER (WHERE status NOT IN ('SUCCESS', 'STARTED')), min(traceback) "  # noqa: S608
                f"FROM {dcr_celery.TABLE}"
            ).fetchone()
            if row and row[0]:
                raise RuntimeError(f"{self.name}: {row[0]} tasks did not succeed; e.g. {row[1]}")
        row = poll.execute(f"SELECT count(*) FROM {dcr_celery.TABLE} WHERE status = 'SUCCESS'").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def finish(self, n: int, client: Any, poll: psycopg.Connection[Any]) -> str:
        """What the round checked at its end."""
        if self.kind == BARE:
            return f"counter {int(client.get(bare_celery.COUNTER) or 0):,}/{n:,}"
        row = poll.execute(
            f"SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(date_started) FROM {dcr_celery.TABLE}"  # noqa: S608
        ).fetchone()
        success, started = (int(row[0]), int(row[1])) if row else (0, 0)
        return f"{success:,}/{n:,} SUCCESS rows, {started:,} with date_started (the STARTED write)"

    def backlog(self, client: Any) -> str:
        return f"{client.llen(self.queue):,} in {self.queue}"


def peers() -> list[Peer]:
    return [Peer(BARE, p) for p in POOLS] + [Peer(DCR, p) for p in POOLS if p.key in DCR_POOLS]


# The django-celery-results peer waits on PostgreSQL twice per task; which pool serves it best is
# measured as for bare Celery, over the pools named here.
DCR_POOLS = ("prefork", "threads", "solo")


def queue_keys() -> list[str]:
    """Every peer's queue and its kombu binding set, and the bare counter: the Redis keys peers make."""
    queues = [Peer(BARE, p).queue for p in POOLS] + [Peer(DCR, p).queue for p in POOLS]
    return [*queues, *(f"_kombu.binding.{q}" for q in queues), bare_celery.COUNTER]


def dcr_prepare(cfg: Config, conn: psycopg.Connection[Any]) -> None:
    """The peer's schema in the bench database, and django-celery-results' migrations applied in it."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(dcr_celery.SCHEMA)))
    argv = [PYTHON, "manage.py", "migrate", "django_celery_results", "--noinput", "-v0"]
    subprocess.run(argv, cwd=ROOT, env=child_env(cfg, "bench.settings_dcr"), check=True, timeout=300)


def dcr_drop(conn: psycopg.Connection[Any]) -> None:
    """The schema and all in it: the peer's rows, its tables, its migration records."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(dcr_celery.SCHEMA)))
