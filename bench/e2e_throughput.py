"""(d) End to end: `noop` tasks from services.task_create to `completed` in the table, beside its peers.

The whole path runs as in production, on the bench database and Redis: this process creates the
tasks with services.task_create (which publishes each to the queue node.benchnode after its
commit), `manage.py run_node benchnode` runs them (Celery, threads x4) and reports received,
in_progress and completed to the update stream, and one `manage.py run_writer` applies those to
PostgreSQL. A round is timed from the first create until a COUNT sees every task `completed`.

The peers (bench.peers) run in the same sitting: bare Celery in each pool it can use here, and
Celery + django-celery-results storing STARTED and SUCCESS rows in the same PostgreSQL. Each is
sent the same number of no-ops from the same number of threads. Rounds of all of them alternate
(the order reversed every other round), so the machine's noise hits them alike, and each figure is
the median round.

CPU seconds of every process on each path (this one, the node worker, the writer, a peer worker
with all its pool children, the bench database's PostgreSQL backends, the Redis server) are read
from /proc around each round: on a 2-core machine, CPU per task bounds the throughput. The peak
RSS (VmHWM) of every worker and the writer is read after each round.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from bench import dcr_celery, proc_stats
from bench import peers as peer_mod
from bench.config import PYTHON, ROOT, Config, child_env
from bench.db import connect
from bench.e2e_steady import Steady
from bench.procs import LOG_DIR, spawn, stop

NODE = "benchnode"
CLUSTER = "benchcluster"
TASK_TYPE = "noop"
SOURCE = "bench"
CONCURRENCY = 4  # run_node's default
WARMUP_TASKS = 20
PG_POLL_S = 0.05  # a COUNT in PostgreSQL
REDIS_POLL_S = 0.01  # a GET in Redis
# Past this share of a round done, every path is polled every TAIL_POLL_S: a round ends when the bench
# sees all N done, for taskhub and its peers alike, within a few ms, while polling early costs little.
TAIL_SHARE, TAIL_POLL_S = 0.9, 0.005
TASKHUB = "taskhub"


@dataclass(frozen=True)
class Run:
    label: str
    tasks: int
    seconds: float  # first create (or send) -> the last task counted done
    send_seconds: float  # first create (or send) -> the last create (or send) returned
    cpu: dict[str, float]  # CPU seconds per process over the round
    check: str
    backlog: str = ""  # what was still waiting when the last create (or send) returned
    rss: str = ""  # peak RSS of the path's long-running processes, after the round

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    @property
    def send_rate(self) -> float:
        return self.tasks / self.send_seconds if self.send_seconds else 0.0

    def cpu_ms_per_task(self) -> dict[str, float]:
        return {k: v * 1000 / self.tasks for k, v in self.cpu.items()}

    @property
    def cpu_ms(self) -> float:
        return sum(self.cpu_ms_per_task().values())


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def spread(runs: list[Run]) -> str:
    return f"{min(r.rate for r in runs):,.0f} to {max(r.rate for r in runs):,.0f}/s"


def cpu_text(run: Run) -> str:
    per = run.cpu_ms_per_task()
    return f"{run.cpu_ms:.2f} ms = " + " + ".join(f"{k} {v:.2f}" for k, v in per.items())


# --- Redis keys ------------------------------------------------------------------------------------

_PIDBOX = ("_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox", "_kombu.binding.celeryev")


def _queue_keys() -> list[str]:
    from workers.protocol.queues import node_queue

    return [node_queue(NODE), f"_kombu.binding.{node_queue(NODE)}", *peer_mod.queue_keys()]


def delete_keys(client: redis.Redis, pidbox_before: set[str] | None = None) -> None:
    """Only the section's own keys: its queues, their kombu bindings and the bare counter; the
    workers' remote-control bindings only if this run made them. (The stream prefix's keys are
    deleted with the others', writer_throughput.delete_stream_keys.)"""
    keys = _queue_keys()
    if pidbox_before is not None:
        keys += [k for k in _PIDBOX if k not in pidbox_before]
    client.delete(*keys)


@dataclass(frozen=True)
class _Snapshot:
    procs: dict[str, float]
    backends: dict[int, tuple[bool, float]]  # pid -> (the django-celery-results peer's?, CPU seconds)
    redis: float


# --- the processes and the rounds ------------------------------------------------------------------


class Section:
    """The writer, the node worker and the peers' workers, started once for all of (d)."""

    def __init__(self, cfg: Config) -> None:
        from tasks_app.fleet.services import cluster_ensure, node_register

        self.cfg = cfg
        self.work = LOG_DIR / "e2e"
        self.redis: Any = redis.Redis.from_url(cfg.redis_url, socket_timeout=10)
        self.pidbox_before = {k for k in _PIDBOX if self.redis.exists(k)}
        delete_keys(self.redis, self.pidbox_before)
        self.poll: psycopg.Connection[Any] = connect(cfg.database_url)
        row = self.poll.execute("SELECT pg_backend_pid()").fetchone()
        self._poll_pid = int(row[0]) if row else 0
        self._polls = 0
        self.delete_rows()
        _reset_offsets()
        node_register(cluster=cluster_ensure(name=CLUSTER), name=NODE)
        self.pool = ThreadPoolExecutor(max_workers=cfg.e2e_threads, thread_name_prefix="bench-e2e")
        self.writer: Any = None
        self.node: Any = None
        self.peers = peer_mod.peers()

    def start(self) -> None:
        cfg = self.cfg
        from django.conf import settings

        peer_mod.dcr_prepare(cfg, self.poll)
        env = child_env(cfg)
        env["TASKHUB_VAR_DIR"] = str(self.work / "var")  # nothing of the bench lands in the project's var/
        # The peers' visibility timeout follows taskhub's (their app modules read it from here).
        env["TASKHUB_REDELIVERY_SECONDS"] = str(settings.TASKHUB_REDELIVERY_SECONDS)
        manage = str(ROOT / "manage.py")
        self.writer, self.writer_log = spawn("e2e-writer", [PYTHON, manage, "run_writer"], dict(env, LOG_LEVEL="INFO"))
        node_argv = [
            PYTHON, manage, "run_node", NODE, "--data-dir", str(self.work / "node"),
            "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING",
        ]  # fmt: skip
        self.node, self.node_log = spawn("e2e-node", node_argv, env)
        for peer in self.peers:
            peer.start(env)
        self._wait_started()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._close_thread_connections()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for proc in (*(p.proc for p in self.peers), self.node, self.writer):
            if proc is not None:
                stop(proc)
        try:
            from tasks_app.models import Cluster, Node

            self.delete_rows()
            Node.objects.filter(name=NODE).delete()
            Cluster.objects.filter(name=CLUSTER, nodes__isnull=True).delete()
            peer_mod.dcr_drop(self.poll)
            delete_keys(self.redis, self.pidbox_before)
        finally:
            self.poll.close()

    # --- start-up -------------------------------------------------------------------------------

    def _children(self) -> list[tuple[str, Any, Any]]:
        own = [("writer", self.writer, self.writer_log), ("node", self.node, self.node_log)]
        return own + [(p.name, p.proc, p.log) for p in self.peers]

    def check_children(self) -> None:
        for name, proc, log in self._children():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")

    def _wait_started(self) -> None:
        from workers.protocol.liveness import alive

        deadline = time.monotonic() + 60
        while "writer started" not in self.writer_log.read_text() or not alive(NODE):
            self.check_children()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"writer or node not up after 60 s: {self.writer_log.read_text()[-1000:]}"
                    f"\n{self.node_log.read_text()[-1000:]}"
                )
            time.sleep(0.05)
        # Every path once (a peer's first round also waits for its worker to be up), so that
        # connections, imports and the node's data directory exist.
        self.taskhub_round(WARMUP_TASKS)
        for peer in self.peers:
            self.peer_round(peer, WARMUP_TASKS)

    # --- rounds ---------------------------------------------------------------------------------

    def delete_rows(self) -> None:
        self.poll.execute(
            "DELETE FROM global_task_history WHERE task_id IN (SELECT task_id FROM global_task WHERE task_type = %s)",
            (TASK_TYPE,),
        )
        self.poll.execute("DELETE FROM global_task WHERE task_type = %s", (TASK_TYPE,))

    def _statuses(self) -> dict[str, int]:
        rows = self.poll.execute(
            "SELECT task_status, count(*) FROM global_task WHERE task_type = %s GROUP BY 1", (TASK_TYPE,)
        ).fetchall()
        counts = {str(s): int(n) for s, n in rows}
        if counts.get("failed") or counts.get("cancelled"):
            sample = self.poll.execute(
                "SELECT task_status_data FROM global_task WHERE task_type = %s AND task_status = 'failed' LIMIT 1",
                (TASK_TYPE,),
            ).fetchone()
            raise RuntimeError(f"noop tasks did not complete: {counts}; e.g. {sample}")
        return counts

    def _snapshot(self) -> _Snapshot:
        own = resource.getrusage(resource.RUSAGE_SELF)
        procs = {"bench": own.ru_utime + own.ru_stime}
        for name, proc, _ in self._children():
            procs[name] = proc_stats.tree_cpu(proc.pid)
        found = self.poll.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        # The bench's own polling backend is left out: its COUNTs are measurement, not the path.
        backends = {
            int(pid): (name == dcr_celery.APPLICATION_NAME, c)
            for pid, name in found
            if pid != self._poll_pid and (c := proc_stats.cpu(int(pid))) is not None
        }
        info: Any = self.redis.info("cpu")
        return _Snapshot(procs, backends, float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))

    @staticmethod
    def _cpu(a: _Snapshot, b: _Snapshot, parts: dict[str, str], postgres: str | None) -> dict[str, float]:
        """CPU seconds between two snapshots: parts maps the label shown to the process's name; postgres
        says whose backends count: taskhub's (every one but the django-celery-results peer's), "dcr" or None."""
        out = {label: b.procs[name] - a.procs[name] for label, name in {"bench": "bench", **parts}.items()}
        if postgres is not None:
            dcr = postgres == peer_mod.DCR
            out["PostgreSQL"] = sum(
                v - a.backends.get(pid, (is_dcr, 0.0))[1] for pid, (is_dcr, v) in b.backends.items() if is_dcr == dcr
            )
        out["Redis"] = b.redis - a.redis
        return out

    def _timed(
        self, n: int, job: Callable[[int], None], done: Callable[[], int], poll_s: float, backlog: Callable[[], str]
    ) -> tuple[float, float, str]:
        """Run job(count) on every thread, n in all; poll done() until n (every poll_s, then TAIL_POLL_S).

        Returns (seconds, seconds until the last job returned, backlog() then)."""
        shares = [n // self.cfg.e2e_threads + (1 if i < n % self.cfg.e2e_threads else 0)
                  for i in range(self.cfg.e2e_threads)]  # fmt: skip
        started = time.perf_counter()
        futures: list[Future[None]] = [self.pool.submit(job, k) for k in shares if k]
        sent_at: float | None = None
        queued = ""
        count = 0
        deadline = started + self.cfg.e2e_max_s
        while True:
            if sent_at is None and all(f.done() for f in futures):
                sent_at = time.perf_counter()
                for f in futures:
                    f.result()  # a create that raised stops the bench here
                queued = backlog()
            if sent_at is not None:
                count = done()
                if count >= n:
                    break
            self.check_children()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{count}/{n} tasks done after {self.cfg.e2e_max_s} s (BENCH_E2E_MAX_SECONDS)")
            time.sleep(TAIL_POLL_S if count >= n * TAIL_SHARE else poll_s)
        elapsed = time.perf_counter() - started
        return elapsed, (sent_at or started) - started, queued

    def completed(self) -> int:
        """What a taskhub round waits for: an index-only COUNT; every 20th poll also looks for failures."""
        self._polls += 1
        if self._polls % 20 == 0:
            self._statuses()
        row = self.poll.execute(
            "SELECT count(*) FROM global_task WHERE task_type = %s AND task_status = 'completed'", (TASK_TYPE,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _backlog(self) -> str:
        from tasks_app.tasks import stream as update_stream
        from workers.protocol.queues import node_queue

        return (
            f"{self.redis.llen(node_queue(NODE)):,} in {node_queue(NODE)} and {update_stream.backlog():,} in the stream"
        )

    def rss_kb(self) -> dict[str, int]:
        """VmRSS now of the node worker and the writer (the steady run's memory check)."""
        return {"node": proc_stats.rss_kb(self.node.pid), "writer": proc_stats.rss_kb(self.writer.pid)}

    def taskhub_round(self, n: int) -> Run:
        self.delete_rows()
        before = self._snapshot()
        seconds, sent, queued = self._timed(n, _create_tasks, self.completed, PG_POLL_S, self._backlog)
        cpu = self._cpu(before, self._snapshot(), {"node": "node", "writer": "writer"}, postgres=TASKHUB)
        self._statuses()
        row = self.poll.execute(
            """SELECT count(*), count(*) FILTER (WHERE h.to_status = 'completed')
               FROM global_task_history h JOIN global_task t USING (task_id) WHERE t.task_type = %s""",
            (TASK_TYPE,),
        ).fetchone()
        history, completed = (int(row[0]), int(row[1])) if row else (0, 0)
        check = f"{completed:,}/{n:,} completed, {history:,} history rows"
        rss = (
            f"node {proc_stats.mb_text(proc_stats.peak_rss_kb(self.node.pid))}, "
            f"writer {proc_stats.mb_text(proc_stats.peak_rss_kb(self.writer.pid))}"
        )
        return Run(TASKHUB, n, seconds, sent, cpu, check, queued, rss)

    def peer_round(self, peer: peer_mod.Peer, n: int) -> Run:
        peer.reset(self.redis, self.poll)
        polls = 0

        def done() -> int:
            nonlocal polls
            polls += 1
            return peer.done(self.redis, self.poll, check_failures=polls % 20 == 0)

        before = self._snapshot()
        poll_s = REDIS_POLL_S if peer.kind == peer_mod.BARE else PG_POLL_S
        seconds, sent, queued = self._timed(n, peer.send, done, poll_s, lambda: peer.backlog(self.redis))
        postgres = peer_mod.DCR if peer.kind == peer_mod.DCR else None
        cpu = self._cpu(before, self._snapshot(), {"worker": peer.name}, postgres)
        peer.done(self.redis, self.poll, check_failures=True)
        check = peer.finish(n, self.redis, self.poll)
        assert peer.proc is not None
        rss = f"worker {proc_stats.mb_text(proc_stats.peak_rss_kb(peer.proc.pid))}"
        return Run(peer.name, n, seconds, sent, cpu, check, queued, rss)

    def _close_thread_connections(self) -> None:
        """Each pool thread holds its own Django connection; close them all, on their own threads."""
        barrier = threading.Barrier(self.cfg.e2e_threads, timeout=10)

        def close() -> None:
            from django.db import connections

            barrier.wait()  # one call per thread: none may take a second
            connections.close_all()

        for f in [self.pool.submit(close) for _ in range(self.cfg.e2e_threads)]:
            f.result(timeout=15)


def _reset_offsets() -> None:
    from bench.writer_throughput import _reset_offsets as reset

    reset()


def _create_tasks(count: int) -> None:
    from tasks_app.tasks.services import task_create

    for _ in range(count):
        task_create(task_type=TASK_TYPE, task_data={"node": NODE}, execute=True, source=SOURCE)


@dataclass(frozen=True)
class PeerRuns:
    peer: peer_mod.Peer
    runs: list[Run]

    @property
    def median(self) -> Run:
        return median(self.runs)


@dataclass(frozen=True)
class Result:
    taskhub: list[Run]
    peers: list[PeerRuns]
    steady: Steady | None  # None when BENCH_STEADY_MINUTES is 0

    def strongest(self, kind: str) -> PeerRuns:
        """The configuration of a kind with the highest median throughput."""
        return max((p for p in self.peers if p.peer.kind == kind), key=lambda p: p.median.rate)


def measure(cfg: Config) -> Result:
    """Start the processes, alternate the rounds, then the steady run; always stop them after."""
    from bench import e2e_steady

    section = Section(cfg)
    try:
        section.start()
        taskhub_runs: list[Run] = []
        peer_runs = {p.name: PeerRuns(p, []) for p in section.peers}
        rounds: list[Callable[[], Run]] = [lambda: section.taskhub_round(cfg.e2e_tasks)]
        rounds += [functools.partial(section.peer_round, p, cfg.e2e_tasks) for p in section.peers]
        for i in range(cfg.rounds):
            for fn in rounds if i % 2 == 0 else reversed(rounds):
                run = fn()
                (taskhub_runs if run.label == TASKHUB else peer_runs[run.label].runs).append(run)
                print(f"    {run.label}: {run.rate:,.0f} tasks/s ({run.check})", flush=True)
        steady = e2e_steady.run(section)
        return Result(taskhub_runs, list(peer_runs.values()), steady)
    finally:
        section.close()
