"""(d)'s steady run: taskhub at a steady cfg.e2e_rate tasks/s for BENCH_STEADY_MINUTES, for latency and memory.

Tasks are created one at a time on this thread at the rate. Latency, per task: from the creation
history row's `at` until a watcher thread sees the row `completed` in the table (a primary-key
SELECT of the tasks not yet seen, every WATCH_S): what a caller reading the table waits, the
writer included, whatever time the history gives the completion. A tap on the update stream
(XREAD, which takes nothing away from the writer) notes when each report reached Redis and the
times the node gave its steps, which splits that wait into stages. Memory: the VmRSS of the node
worker and of the writer once the warm-up is over (a minute, or half the run if shorter) and again
when the last task has completed; a worker that keeps something per task grows between the two.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from bench.db import connect

if TYPE_CHECKING:
    from bench.e2e_throughput import Section

WARMUP_S = 60.0
PROGRESS_S = 60.0
WATCH_S = 0.005  # the watcher's interval: on average half of it is in every latency
# The stages of one task's wait, by the tap: the node's times for its steps (the stream's, for a report
# without its own), then the completed report's arrival in the stream, then the row seen completed.
STAGES = ("created→received", "received→in_progress", "in_progress→completed", "completed→in stream",
          "in stream→seen in table")  # fmt: skip


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    offered_rate: float
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (p50, p99) ms
    tapped: int = 0  # tasks whose three reports the tap saw


@dataclass(frozen=True)
class Steady:
    seconds: float  # creating, at the rate
    warmup_s: float
    latency: Latency
    rss_warm: dict[str, int]  # kB, after the warm-up
    rss_end: dict[str, int]  # kB, when the last task had completed

    def growth(self, name: str) -> float:
        warm = self.rss_warm[name]
        return (self.rss_end[name] - warm) / warm if warm else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class StreamTap(threading.Thread):
    """XREADs every shard of the update stream as entries arrive. Per (task, status) it notes when the
    entry reached Redis (the millisecond of its id) and when the step happened: the report's own time
    (`at`, and `steps` for the earlier steps a node's report folds in), else its arrival. Reading takes
    nothing away: the writer reads by offset."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(name="bench-stream-tap", daemon=True)
        from workers.protocol import keys

        self._client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._last: dict[Any, Any] = {keys.stream_key(s): "$" for s in range(keys.shard_count())}
        self._stopping = threading.Event()
        self.arrived: dict[tuple[str, str], float] = {}  # ms
        self.happened: dict[tuple[str, str], float] = {}  # ms

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
                    self._note(float(sid.split(b"-")[0]), fields)

    def _note(self, arrived: float, fields: dict[bytes, bytes]) -> None:
        tid, status = fields.get(b"task_id"), fields.get(b"status")
        if tid is None or status is None:
            return
        task = tid.decode()
        at = fields.get(b"at")
        self.arrived.setdefault((task, status.decode()), arrived)
        self.happened.setdefault((task, status.decode()), float(at) * 1000 if at else arrived)
        for step, step_at in json.loads(fields.get(b"steps") or b"[]"):
            self.arrived.setdefault((task, step), arrived)
            self.happened.setdefault((task, step), float(step_at) * 1000)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


class Watcher(threading.Thread):
    """Notes, per task, the wall-clock time its row was first seen `completed` in the table."""

    def __init__(self, database_url: str) -> None:
        super().__init__(name="bench-completion-watcher", daemon=True)
        self._conn = connect(database_url)
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._stopping = threading.Event()
        self.seen: dict[str, float] = {}  # task_id -> epoch seconds
        self.error: BaseException | None = None

    def add(self, task_id: str) -> None:
        with self._lock:
            self._pending.add(task_id)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                began = time.perf_counter()
                with self._lock:
                    ids = list(self._pending)
                if ids:
                    rows = self._conn.execute(
                        "SELECT task_id FROM global_task WHERE task_id = ANY(%s) AND task_status = 'completed'", (ids,)
                    ).fetchall()
                    now = time.time()
                    with self._lock:
                        for (tid,) in rows:
                            self._pending.discard(tid)
                            self.seen[tid] = now
                self._stopping.wait(max(0.0, WATCH_S - (time.perf_counter() - began)))
        except BaseException as exc:  # reported by the run, which would otherwise wait for nothing
            self.error = exc

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
        self._conn.close()


def run(section: Section) -> Steady | None:
    """Create at the rate for the configured minutes, wait for the last task, then measure."""
    from django.conf import settings

    from bench.e2e_throughput import NODE, SOURCE, TASK_TYPE
    from tasks_app.tasks.services import task_create

    cfg = section.cfg
    seconds = cfg.steady_minutes * 60
    n = int(seconds * cfg.e2e_rate)
    if n < 1:
        return None
    warmup = min(WARMUP_S, seconds / 2)
    print(f"(d) steady run: {n:,} tasks at {cfg.e2e_rate}/s ({cfg.steady_minutes:g} min), RSS after {warmup:.0f} s "
          f"and at the end ...", flush=True)  # fmt: skip
    section.delete_rows()
    tap, watcher = StreamTap(settings.REDIS_URL), Watcher(cfg.database_url)
    tap.start()
    watcher.start()
    interval = 1.0 / cfg.e2e_rate
    rss_warm: dict[str, int] | None = None
    try:
        started = time.perf_counter()
        progress = started + PROGRESS_S
        for i in range(n):
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            task, _ = task_create(task_type=TASK_TYPE, task_data={"node": NODE}, execute=True, source=SOURCE)
            watcher.add(task.task_id)
            now = time.perf_counter()
            if rss_warm is None and now - started >= warmup:
                rss_warm = section.rss_kb()
            if now >= progress:
                progress += PROGRESS_S
                section.check_children()
                print(f"    {i + 1:,}/{n:,} created, {len(watcher.seen):,} seen completed", flush=True)
        created_s = time.perf_counter() - started
        deadline = time.perf_counter() + cfg.e2e_max_s
        while watcher.pending():
            section.check_children()
            if watcher.error is not None:
                raise RuntimeError(f"steady run: the watcher failed: {watcher.error!r}")
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"steady run: {watcher.pending()} of {n} tasks not completed after {cfg.e2e_max_s} s"
                )
            time.sleep(0.05)
        rss_end = section.rss_kb()
    finally:
        watcher.stop()
        tap.stop()
    if section.completed() != n:
        raise RuntimeError(f"steady run: {section.completed()} of {n} tasks completed")
    latency = _latency(section, n, n / created_s if n > 1 else 0.0, tap, watcher.seen)
    return Steady(created_s, warmup, latency, rss_warm or rss_end, rss_end)


def _latency(section: Section, n: int, offered: float, tap: StreamTap, seen: dict[str, float]) -> Latency:
    from bench.e2e_throughput import TASK_TYPE

    rows = section.poll.execute(
        """SELECT t.task_id, extract(epoch FROM s.at)::float8 FROM global_task t
           JOIN global_task_history s ON s.task_id = t.task_id AND s.from_status = ''
           WHERE t.task_type = %s""",
        (TASK_TYPE,),
    ).fetchall()
    total = [(seen[tid] - created) * 1000 for tid, created in rows if tid in seen]
    if len(total) != n:
        raise RuntimeError(f"steady run: {len(total)} of {n} tasks have a creation row and were seen completed")
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    tapped = 0
    for tid, created in rows:
        got = [tap.happened.get((tid, s)) for s in ("received", "in_progress", "completed")]
        sent = tap.arrived.get((tid, "completed"))
        if sent is None or any(m is None for m in got):
            continue
        tapped += 1
        rec, prog, comp = (float(m) for m in got if m is not None)
        for name, ms in zip(
            STAGES, (rec - created * 1000, prog - rec, comp - prog, sent - comp, seen[tid] * 1000 - sent), strict=True
        ):
            stages[name].append(ms)
    return Latency(
        samples=n,
        p50_ms=statistics.median(total),
        p99_ms=percentile(total, 0.99),
        max_ms=max(total),
        offered_rate=offered,
        stages={k: (statistics.median(v), percentile(v, 0.99)) for k, v in stages.items() if v},
        tapped=tapped,
    )
