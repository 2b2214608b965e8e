"""(d) End to end: `noop` tasks from services.task_create to `completed` in the table, beside bare Celery.

The whole path runs as in production, on the bench database and Redis: this process creates the
tasks with services.task_create (which publishes each to the queue node.benchnode after its
commit), `manage.py run_node benchnode` runs them (Celery, threads x4) and reports received,
in_progress and completed to the update stream, and one `manage.py run_writer` applies those to
PostgreSQL. A round is timed from the first create until a COUNT sees every task `completed`.

The baseline is bare Celery on the same Redis, with the same pool and concurrency:
bench.bare_celery, one task that INCRs a counter, sent from this process with the same number of
threads and timed until the counter reaches N. Rounds of the two alternate, and each figure is
the median round.

Latency: tasks created one at a time at a steady rate; per task, the `completed` history row's
`at` minus the creation row's `at`. A tap on the update stream (XREAD, which takes nothing away
from the writer) notes when each report reached Redis, which splits that time into stages.

CPU seconds of every process on the path (this one, the node worker, the writer, the bench
database's PostgreSQL backends, the Redis server) are read from /proc around each round: on a
2-core machine, CPU per task bounds the throughput.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from bench import bare_celery
from bench.config import PYTHON, ROOT, Config, child_env
from bench.db import connect
from bench.procs import LOG_DIR, spawn, stop

NODE = "benchnode"
CLUSTER = "benchcluster"
TASK_TYPE = "noop"
SOURCE = "bench"
CONCURRENCY = 4  # run_node's default, and the bare worker's
WARMUP_TASKS = 20
TASKHUB_POLL_S = 0.05  # a COUNT in PostgreSQL; the end time comes from the history rows anyway
BARE_POLL_S = 0.01  # a GET in Redis
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    label: str
    tasks: int
    seconds: float  # first create (or send) -> the last task counted done
    send_seconds: float  # first create (or send) -> the last create (or send) returned
    cpu: dict[str, float]  # CPU seconds per process over the round
    check: str
    backlog: str = ""  # what was still waiting when the last create (or send) returned

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    @property
    def send_rate(self) -> float:
        return self.tasks / self.send_seconds if self.send_seconds else 0.0

    def cpu_ms_per_task(self) -> dict[str, float]:
        return {k: v * 1000 / self.tasks for k, v in self.cpu.items()}


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    offered_rate: float
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (p50, p99) ms
    tapped: int = 0  # tasks whose three reports the tap saw


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def spread(runs: list[Run]) -> str:
    return f"{min(r.rate for r in runs):,.0f} to {max(r.rate for r in runs):,.0f}/s"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_text(run: Run) -> str:
    per = run.cpu_ms_per_task()
    parts = [f"{k} {v:.2f}" for k, v in per.items()]
    return f"{sum(per.values()):.2f} ms = " + " + ".join(parts)


# --- Redis keys ------------------------------------------------------------------------------------

_PIDBOX = ("_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox", "_kombu.binding.celeryev")


def _queue_keys() -> list[str]:
    from workers.protocol.queues import node_queue

    queues = (node_queue(NODE), bare_celery.QUEUE)
    return [*queues, *(f"_kombu.binding.{q}" for q in queues), bare_celery.COUNTER]


def delete_keys(client: redis.Redis, pidbox_before: set[str] | None = None) -> None:
    """Only the section's own keys: the two queues, their kombu bindings and the bare counter; the
    workers' remote-control bindings only if this run made them. (The stream prefix's keys are
    deleted with the others', writer_throughput.delete_stream_keys.)"""
    keys = _queue_keys()
    if pidbox_before is not None:
        keys += [k for k in _PIDBOX if k not in pidbox_before]
    client.delete(*keys)


# --- CPU accounting --------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a process, all its threads, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        return (int(after_name[11]) + int(after_name[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class _Snapshot:
    procs: dict[str, float]
    backends: dict[int, float]
    redis: float


# --- the stream tap --------------------------------------------------------------------------------


class StreamTap(threading.Thread):
    """XREADs every shard of the update stream as entries arrive and notes, per (task, status), the
    millisecond Redis gave the entry (its id). Reading takes nothing away: the writer reads by offset."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(name="bench-stream-tap", daemon=True)
        from workers.protocol import keys

        self._client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._last: dict[Any, Any] = {keys.stream_key(s): "$" for s in range(keys.shard_count())}
        self._stopping = threading.Event()
        self.seen: dict[tuple[str, str], int] = {}

    def start(self) -> None:
        # From each stream's newest id (not "$", which would skip what arrives between two reads).
        for key in self._last:
            info: Any = self._client.xinfo_stream(key) if self._client.exists(key) else None
            self._last[key] = info["last-generated-id"] if info else "0-0"
        super().start()

    def run(self) -> None:
        while not self._stopping.is_set():
            reply: Any = self._client.xread(self._last, block=100)
            for key, entries in reply or []:
                for sid, fields in entries:
                    self._last[key] = sid
                    tid, status = fields.get(b"task_id"), fields.get(b"status")
                    if tid is not None and status is not None:
                        self.seen.setdefault((tid.decode(), status.decode()), int(sid.split(b"-")[0]))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


# --- the processes and the rounds ------------------------------------------------------------------


class Section:
    """The writer, the node worker and the bare Celery worker, started once for all of (d)."""

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
        self._delete_rows()
        _reset_offsets()
        node_register(cluster=cluster_ensure(name=CLUSTER), name=NODE)
        self.pool = ThreadPoolExecutor(max_workers=cfg.e2e_threads, thread_name_prefix="bench-e2e")
        self.writer: Any = None
        self.node: Any = None
        self.bare: Any = None

    def start(self) -> None:
        cfg = self.cfg
        from django.conf import settings

        env = child_env(cfg)
        env["TASKHUB_VAR_DIR"] = str(self.work / "var")  # nothing of the bench lands in the project's var/
        # The bare app's visibility timeout follows taskhub's (bench.bare_celery reads it from here).
        env["TASKHUB_REDELIVERY_SECONDS"] = str(settings.TASKHUB_REDELIVERY_SECONDS)
        manage = str(ROOT / "manage.py")
        self.writer, self.writer_log = spawn("e2e-writer", [PYTHON, manage, "run_writer"], dict(env, LOG_LEVEL="INFO"))
        node_argv = [
            PYTHON, manage, "run_node", NODE, "--data-dir", str(self.work / "node"),
            "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING",
        ]  # fmt: skip
        self.node, self.node_log = spawn("e2e-node", node_argv, env)
        bare_argv = [
            PYTHON, "-m", "celery", "-A", "bench.bare_celery", "worker", "-Q", bare_celery.QUEUE,
            "--hostname", "bench-bare@%h", "--pool", "threads", "--concurrency", str(CONCURRENCY),
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.bare, self.bare_log = spawn("e2e-bare", bare_argv, env)
        self._wait_started()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._close_thread_connections()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for proc in (self.bare, self.node, self.writer):
            if proc is not None:
                stop(proc)
        try:
            from tasks_app.models import Cluster, Node

            self._delete_rows()
            Node.objects.filter(name=NODE).delete()
            Cluster.objects.filter(name=CLUSTER, nodes__isnull=True).delete()
            delete_keys(self.redis, self.pidbox_before)
        finally:
            self.poll.close()

    # --- start-up -------------------------------------------------------------------------------

    def _children(self) -> list[tuple[str, Any, Any]]:
        return [("writer", self.writer, self.writer_log), ("node", self.node, self.node_log),
                ("bare worker", self.bare, self.bare_log)]  # fmt: skip

    def _check_children(self) -> None:
        for name, proc, log in self._children():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")

    def _wait_started(self) -> None:
        from workers.protocol.liveness import alive

        deadline = time.monotonic() + 60
        while "writer started" not in self.writer_log.read_text() or not alive(NODE):
            self._check_children()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"writer or node not up after 60 s: {self.writer_log.read_text()[-1000:]}"
                    f"\n{self.node_log.read_text()[-1000:]}"
                )
            time.sleep(0.05)
        # Both paths once, so that connections, imports and the node's data directory exist.
        self.taskhub_round(WARMUP_TASKS)
        self.bare_round(WARMUP_TASKS)

    # --- rounds ---------------------------------------------------------------------------------

    def _delete_rows(self) -> None:
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
        procs = {"bench process": own.ru_utime + own.ru_stime}
        for name, proc, _ in self._children():
            procs[name] = _proc_cpu(proc.pid) or 0.0
        pids = [int(r[0]) for r in self.poll.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()]  # fmt: skip
        # The bench's own polling backend is left out: its COUNTs are measurement, not the path.
        backends = {pid: cpu for pid in pids if pid != self._poll_pid and (cpu := _proc_cpu(pid)) is not None}
        info: Any = self.redis.info("cpu")
        return _Snapshot(procs, backends, float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))

    @staticmethod
    def _cpu(a: _Snapshot, b: _Snapshot, worker: str) -> dict[str, float]:
        out = {"bench": b.procs["bench process"] - a.procs["bench process"]}
        if worker == "node":
            out["node"] = b.procs["node"] - a.procs["node"]
            out["writer"] = b.procs["writer"] - a.procs["writer"]
            out["PostgreSQL"] = sum(v - a.backends.get(pid, 0.0) for pid, v in b.backends.items())
        else:
            out["worker"] = b.procs["bare worker"] - a.procs["bare worker"]
        out["Redis"] = b.redis - a.redis
        return out

    def _timed(
        self, n: int, job: Callable[[int], None], done: Callable[[], int], poll_s: float, backlog: Callable[[], str]
    ) -> tuple[float, float, float, str]:
        """Run job(count) on every thread, n in all; poll done() until n.

        Returns (seconds, seconds until the last job returned, wall-clock start, backlog() then)."""
        shares = [n // self.cfg.e2e_threads + (1 if i < n % self.cfg.e2e_threads else 0)
                  for i in range(self.cfg.e2e_threads)]  # fmt: skip
        started_wall, started = time.time(), time.perf_counter()
        futures: list[Future[None]] = [self.pool.submit(job, k) for k in shares if k]
        sent_at: float | None = None
        queued = ""
        deadline = started + self.cfg.e2e_max_s
        while True:
            if sent_at is None and all(f.done() for f in futures):
                sent_at = time.perf_counter()
                for f in futures:
                    f.result()  # a create that raised stops the bench here
                queued = backlog()
            if sent_at is not None and done() >= n:
                break
            self._check_children()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{done()}/{n} tasks done after {self.cfg.e2e_max_s} s (BENCH_E2E_MAX_SECONDS)")
            time.sleep(poll_s)
        elapsed = time.perf_counter() - started
        return elapsed, (sent_at or started) - started, started_wall, queued

    def _completed(self) -> int:
        """What the round waits for: an index-only COUNT; every 20th poll also looks for failures."""
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

    def taskhub_round(self, n: int) -> Run:
        self._delete_rows()
        before = self._snapshot()
        _, sent, started_wall, queued = self._timed(n, _create_tasks, self._completed, TASKHUB_POLL_S, self._backlog)
        cpu = self._cpu(before, self._snapshot(), "node")
        self._statuses()
        row = self.poll.execute(
            """SELECT count(*), count(*) FILTER (WHERE h.to_status = 'completed'),
                      extract(epoch FROM max(h.at) FILTER (WHERE h.to_status = 'completed'))::float8
               FROM global_task_history h JOIN global_task t USING (task_id) WHERE t.task_type = %s""",
            (TASK_TYPE,),
        ).fetchone()
        history, completed, last_at = (int(row[0]), int(row[1]), float(row[2])) if row else (0, 0, 0.0)
        check = f"{completed:,}/{n:,} completed, {history:,} history rows"
        # Timed to the last `completed` history row, so the COUNT's polling interval is not in the figure.
        return Run("taskhub", n, last_at - started_wall, sent, cpu, check, queued)

    def bare_round(self, n: int) -> Run:
        self.redis.set(bare_celery.COUNTER, 0)
        before = self._snapshot()
        seconds, sent, _, queued = self._timed(
            n,
            _send_bare,
            lambda: int(self.redis.get(bare_celery.COUNTER) or 0),
            BARE_POLL_S,
            lambda: f"{self.redis.llen(bare_celery.QUEUE):,} in {bare_celery.QUEUE}",
        )
        cpu = self._cpu(before, self._snapshot(), "bare")
        done = int(self.redis.get(bare_celery.COUNTER) or 0)
        return Run("bare Celery", n, seconds, sent, cpu, f"counter {done:,}/{n:,}", queued)

    def latency(self) -> Latency:
        """Tasks created one at a time, at cfg.e2e_rate a second, on this thread."""
        from django.conf import settings

        from tasks_app.tasks.services import task_create

        self._delete_rows()
        tap = StreamTap(settings.REDIS_URL)
        tap.start()
        n, interval = self.cfg.e2e_latency_tasks, 1.0 / self.cfg.e2e_rate
        ids: list[str] = []
        try:
            started = time.perf_counter()
            for i in range(n):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                task, _ = task_create(task_type=TASK_TYPE, task_data={"node": NODE}, execute=True, source=SOURCE)
                ids.append(task.task_id)
            offered = n / (time.perf_counter() - started) if n > 1 else 0.0
            deadline = time.perf_counter() + self.cfg.e2e_max_s
            while self._completed() < n:
                self._check_children()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"latency: not all {n} tasks completed within {self.cfg.e2e_max_s} s")
                time.sleep(TASKHUB_POLL_S)
        finally:
            tap.stop()
        rows = self.poll.execute(
            """SELECT s.task_id, extract(epoch FROM s.at)::float8, extract(epoch FROM c.at)::float8
               FROM global_task_history s
               JOIN global_task_history c ON c.task_id = s.task_id AND c.to_status = 'completed'
               WHERE s.from_status = '' AND s.task_id = ANY(%s)""",
            (ids,),
        ).fetchall()
        total = [(done - created) * 1000 for _, created, done in rows]
        stages: dict[str, list[float]] = {"created→received": [], "received→in_progress": [],
                                          "in_progress→completed": [], "completed→applied": []}  # fmt: skip
        tapped = 0
        for tid, created, done in rows:
            ms = [tap.seen.get((tid, s)) for s in ("received", "in_progress", "completed")]
            if any(m is None for m in ms):
                continue
            tapped += 1
            rec, prog, comp = (float(m) for m in ms if m is not None)
            stages["created→received"].append(rec - created * 1000)
            stages["received→in_progress"].append(prog - rec)
            stages["in_progress→completed"].append(comp - prog)
            stages["completed→applied"].append(done * 1000 - comp)
        if len(total) != n:
            raise RuntimeError(f"latency: {len(total)} of {n} tasks have both history rows")
        return Latency(
            samples=n,
            p50_ms=statistics.median(total),
            p99_ms=percentile(total, 0.99),
            max_ms=max(total),
            offered_rate=offered,
            stages={k: (statistics.median(v), percentile(v, 0.99)) for k, v in stages.items() if v},
            tapped=tapped,
        )

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


def _send_bare(count: int) -> None:
    for _ in range(count):
        tid = str(uuid.uuid4())
        kwargs = {"task_id": tid, "task_type": TASK_TYPE, "task_data": {"node": NODE}, "node": NODE, "attempt": 0}
        bare_celery.app.send_task(bare_celery.TASK, task_id=tid, kwargs=kwargs, queue=bare_celery.QUEUE)


@dataclass(frozen=True)
class Result:
    taskhub: list[Run]
    bare: list[Run]
    latency: Latency

    @property
    def ratio(self) -> float:
        b = median(self.bare).rate
        return median(self.taskhub).rate / b if b else 0.0


def measure(cfg: Config) -> Result:
    """Start the processes, alternate the rounds, then the latency run; always stop them after."""
    section = Section(cfg)
    try:
        section.start()
        taskhub_runs: list[Run] = []
        bare_runs: list[Run] = []
        for i in range(cfg.rounds):
            order = (section.taskhub_round, section.bare_round)
            for fn in order if i % 2 == 0 else reversed(order):
                run = fn(cfg.e2e_tasks)
                (taskhub_runs if run.label == "taskhub" else bare_runs).append(run)
                print(f"    {run.label}: {run.rate:,.0f} tasks/s ({run.check})", flush=True)
        print(f"(d) latency: {cfg.e2e_latency_tasks} tasks at {cfg.e2e_rate}/s ...", flush=True)
        latency = section.latency()
        return Result(taskhub_runs, bare_runs, latency)
    finally:
        section.close()
