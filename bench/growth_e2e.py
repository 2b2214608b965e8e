"""(g) End to end with 1, 3 and 10 node workers: `noop` tasks from services.task_create to `completed`.

The path is (d)'s: this process creates the tasks (threads, as (d)), each published to its node's queue
after its commit; real `manage.py run_node` workers, each its own node of the cluster `growth`, run them
and report to the update stream; one `manage.py run_writer` applies the reports. The tasks name their
nodes in turn, so each worker gets the same share. A round is timed from the first create to the last
`completed` history row; CPU seconds of every process on the path are read around it.

The Stack (the writer and the workers, started as they are needed) stays up for the fleet measurement
(bench/growth_fleet.py), which needs 50 live workers: the ten of this part are the first of them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from bench import growth_procs as gp
from bench.config import Config
from bench.db import connect
from bench.growth_config import Growth

CLUSTER = "growth"
NODE_PREFIX = "growth-node-"
TASK_TYPE = "noop"
SOURCE = "bench"
WARMUP_PER_NODE = 10
POLL_S = 0.05
_PIDBOX = ("_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox", "_kombu.binding.celeryev")


def node_names(n: int) -> list[str]:
    return [f"{NODE_PREFIX}{i:02d}" for i in range(n)]


@dataclass(frozen=True)
class Run:
    nodes: int
    tasks: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds per process kind over the round
    check: str

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    def cpu_ms_per_task(self) -> dict[str, float]:
        return {k: v * 1000 / self.tasks for k, v in self.cpu.items()}


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def cpu_text(run: Run) -> str:
    per = run.cpu_ms_per_task()
    return f"{sum(per.values()):.2f} ms = " + " + ".join(f"{k} {v:.2f}" for k, v in per.items())


class Stack:
    """The writer and the node workers of (g), on the bench database and Redis; always closed."""

    def __init__(self, cfg: Config, growth: Growth) -> None:
        self.cfg, self.growth = cfg, growth
        self.redis: Any = redis.Redis.from_url(cfg.redis_url, socket_timeout=10)
        self.pidbox_before = {k for k in _PIDBOX if self.redis.exists(k)}
        self.poll: psycopg.Connection[Any] = connect(cfg.database_url)
        # PostgreSQL's share: every backend of the bench database but this polling one (measurement).
        self.pg = gp.BackendMeter(self.poll, {gp.backend_pid(self.poll)})
        self.writer: gp.Child | None = None
        self.nodes: list[gp.Child] = []
        # Every worker name this section may start: what its clean-up removes.
        self.all_names = node_names(max(growth.live_nodes, *growth.node_counts, 0))

    def start_writer(self) -> None:
        from bench.writer_throughput import _reset_offsets

        self._delete_rows()
        _reset_offsets()  # the stream starts empty, with offsets for every shard
        self.writer = gp.start_writer(self.cfg)

    def ensure_nodes(self, n: int) -> float:
        """Registers and starts workers until n run; returns the seconds it took."""
        from tasks_app.fleet.services import cluster_ensure, node_register

        names = node_names(n)[len(self.nodes) :]
        if not names:
            return 0.0
        cluster = cluster_ensure(name=CLUSTER)
        for name in names:
            node_register(cluster=cluster, name=name)
        started = time.perf_counter()
        self.nodes += gp.start_nodes(self.cfg, names, self.growth.max_s)
        return time.perf_counter() - started

    def check(self) -> None:
        for child in [*self.nodes, *([self.writer] if self.writer else [])]:
            child.check()

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far of each process kind; PostgreSQL's are metered apart (self.pg)."""
        return {
            "bench": gp.own_cpu(),
            "nodes": sum(gp.proc_cpu(c.proc.pid) for c in self.nodes),
            "writer": gp.proc_cpu(self.writer.proc.pid) if self.writer else 0.0,
            "Redis": gp.redis_cpu(self.redis),
        }

    def begin(self) -> dict[str, float]:
        self.pg.start()
        return self.snapshot()

    def cpu(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds of each process kind since begin() returned `before`."""
        after = self.snapshot()
        out = {k: after[k] - before[k] for k in ("bench", "nodes", "writer")}
        out["PostgreSQL"] = self.pg.total()
        out["Redis"] = after["Redis"] - before["Redis"]
        return out

    # --- rounds ---------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        return [c.name for c in self.nodes]

    def _delete_rows(self) -> None:
        names = self.all_names
        self.poll.execute(
            """DELETE FROM global_task_history WHERE task_id IN
               (SELECT task_id FROM global_task WHERE task_type = %s AND node = ANY(%s))""",
            (TASK_TYPE, names),
        )
        self.poll.execute("DELETE FROM global_task WHERE task_type = %s AND node = ANY(%s)", (TASK_TYPE, names))

    def _counts(self) -> dict[str, int]:
        rows = self.poll.execute(
            "SELECT task_status, count(*) FROM global_task WHERE task_type = %s AND node = ANY(%s) GROUP BY 1",
            (TASK_TYPE, self._names()),
        ).fetchall()
        counts = {str(s): int(n) for s, n in rows}
        if counts.get("failed") or counts.get("cancelled"):
            raise RuntimeError(f"noop tasks did not complete: {counts}")
        return counts

    def round(self, tasks: int) -> Run:
        self._delete_rows()
        names, threads = self._names(), self.cfg.e2e_threads
        errors: list[BaseException] = []
        release = threading.Event()

        def create(start: int, count: int) -> None:
            from django.db import connections

            from tasks_app.tasks.services import task_create

            try:
                for k in range(count):
                    node = names[(start + k) % len(names)]
                    task_create(task_type=TASK_TYPE, task_data={"node": node}, execute=True, source=SOURCE)
            except BaseException as exc:  # reported on the main thread
                errors.append(exc)
            finally:
                # This thread's own connection, kept until its backend's CPU has been read.
                release.wait(timeout=self.growth.max_s + 60)
                connections.close_all()

        shares = [tasks // threads + (1 if i < tasks % threads else 0) for i in range(threads)]
        starts = [sum(shares[:i]) for i in range(threads)]
        before = self.begin()
        started_wall = time.time()
        workers = [threading.Thread(target=create, args=(s, k)) for s, k in zip(starts, shares, strict=True) if k]
        for t in workers:
            t.start()
        try:
            done = self._wait(tasks, errors)
            cpu = self.cpu(before)
        finally:
            release.set()
            for t in workers:
                t.join(timeout=30)
        row = self.poll.execute(
            """SELECT count(*), extract(epoch FROM max(h.at) FILTER (WHERE h.to_status = 'completed'))::float8
               FROM global_task_history h JOIN global_task t USING (task_id)
               WHERE t.task_type = %s AND t.node = ANY(%s)""",
            (TASK_TYPE, names),
        ).fetchone()
        history, last_at = (int(row[0]), float(row[1])) if row else (0, started_wall)
        per_node = self.poll.execute(
            "SELECT count(DISTINCT node) FROM global_task WHERE task_type = %s AND node = ANY(%s)",
            (TASK_TYPE, names),
        ).fetchone()
        used = int(per_node[0]) if per_node else 0
        check = f"{done:,}/{tasks:,} completed on {used} node{'s' if used != 1 else ''}, {history:,} history rows"
        return Run(len(names), tasks, last_at - started_wall, cpu, check)

    def _wait(self, tasks: int, errors: list[BaseException]) -> int:
        """Until every task is completed and every creating thread done; samples PostgreSQL's CPU meanwhile."""
        deadline = time.monotonic() + self.growth.max_s
        polls = 0
        while True:
            polls += 1
            if errors:
                raise RuntimeError(f"task_create failed: {errors[0]!r}")
            if polls % 20 == 0:
                self._counts()  # raises on a failed task
            self.pg.sample()
            done = self._completed()
            if done == tasks:  # every create returned (the threads now wait only to close their connections)
                return done
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done}/{tasks} noop tasks completed after {self.growth.max_s} s")
            time.sleep(POLL_S)

    def _completed(self) -> int:
        row = self.poll.execute(
            "SELECT count(*) FROM global_task WHERE task_type = %s AND node = ANY(%s) AND task_status = 'completed'",
            (TASK_TYPE, self._names()),
        ).fetchone()
        return int(row[0]) if row else 0

    # --- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        from tasks_app.models import Cluster, Node
        from workers.protocol.queues import node_queue

        try:
            gp.stop_many(self.nodes)
            if self.writer is not None:
                gp.stop_many([self.writer])
            with contextlib.suppress(Exception):
                self._delete_rows()
            names = self.all_names
            Node.objects.filter(name__in=names).delete()
            Cluster.objects.filter(name=CLUSTER, nodes__isnull=True).delete()
            queues = [node_queue(n) for n in names]
            keys = [*queues, *(f"_kombu.binding.{q}" for q in queues)]
            keys += [k for k in _PIDBOX if k not in self.pidbox_before]
            self.redis.delete(*keys)
        finally:
            self.poll.close()


def measure(stack: Stack) -> list[tuple[Run, list[Run], float]]:
    """For each node count: (the median round, all rounds, seconds the added workers took to start)."""
    out = []
    for n in stack.growth.node_counts:
        print(f"(g) end to end with {n} node worker(s): starting them ...", flush=True)
        startup = stack.ensure_nodes(n)
        stack.round(WARMUP_PER_NODE * n)  # first tasks on new workers: connections, imports, outboxes
        runs = []
        for _ in range(stack.growth.rounds):
            run = stack.round(stack.growth.e2e_tasks)
            print(f"    {n} nodes: {run.rate:,.0f} tasks/s ({run.check}); CPU/task {cpu_text(run)}", flush=True)
            runs.append(run)
        out.append((median(runs), runs, startup))
    return out


def spread(runs: list[Run]) -> str:
    return f"{min(r.rate for r in runs):,.0f} to {max(r.rate for r in runs):,.0f}/s"
