"""Prometheus metrics. Web, writers and the scheduler are separate processes, so counters live in
Redis (one hash, `<TASKHUB_STREAM_PREFIX>:metrics`) and a custom collector reads them, together with
gauges taken from the database and the update stream, when /metrics is scraped.

Recording is best-effort: a Redis failure is logged and swallowed, it never fails a create or a
batch, and for a few seconds after one nothing is tried (tasks_app/ops/breaker.py). Counts are
recorded when the transaction that made the change commits, so a rolled-back change is never counted.

Counted here:
  taskhub_tasks_created_total{task_type}            services.task_create, when a task is created
  taskhub_tasks_finished_total{task_type,status}    transitions.task_transition_many, every applied
                                                    change to completed/failed/cancelled, whatever
                                                    the writer (update stream, PUT, admin, API)
  taskhub_writer_batch_size / _seconds (histograms) writer.apply_shard_batch, after its commit
  taskhub_tasks_purged_total                        retention.purge_finished, after each batch
  taskhub_reports_ignored_total                     transitions: node reports about another run than
                                                    the task's current one, ignored
  taskhub_dead_lettered_total                       writer: entries moved to the dead-letter stream,
                                                    when their batch commits
  taskhub_updates_refused_total                     transitions: queued updates the status rules refuse
  taskhub_task_queue_wait_seconds{task_type,node}   transitions.task_transition_many, when a run's final
  taskhub_task_run_seconds{task_type,node}          status is applied (histograms, LATENCY_BUCKETS): its
  taskhub_task_end_to_end_seconds{task_type,node}   queue wait, run time and end to end as
                                                    tasks_app/ops/latency.py defines them (and
                                                    /api/v1/stats/ reports), from the run's history rows;
                                                    a step the run skipped is not observed. Tracked tasks
                                                    (no runs) are not timed
Read at scrape time:
  taskhub_update_stream_backlog, taskhub_update_stream_lag_seconds, taskhub_dead_letters, taskhub_tasks{status},
  taskhub_nodes_online{cluster}, taskhub_nodes{cluster,scheduling}, taskhub_node_capacity{node,resource},
  taskhub_node_reserved{node,resource} (what placement sees: tasks_app/fleet/placement.py),
  taskhub_metrics_source_up{source}
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import partial

import redis
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Q
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks_app.ops.breaker import is_outage, redis_breaker, server_of
from workers.protocol import keys
from workers.protocol.connection import client
from workers.protocol.status import STATUS_VALUES, TERMINAL

log = logging.getLogger(__name__)

# Upper bounds (le) of the writer histograms' buckets; +Inf is implied.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
BATCH_SECONDS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_HISTOGRAMS = {"batch_size": BATCH_SIZE_BUCKETS, "batch_seconds": BATCH_SECONDS_BUCKETS}

# Upper bounds (le, seconds) of the run latency histograms: from a noop picked up at once to an hour's run.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Each measure of tasks_app/ops/latency.py (a RunTiming property) and its histogram.
LATENCY_HISTOGRAMS = {
    "queue_wait": ("taskhub_task_queue_wait_seconds", "Seconds from a run's start to received (or in_progress)"),
    "run_time": ("taskhub_task_run_seconds", "Seconds from a run's first in_progress to its final status"),
    "end_to_end": ("taskhub_task_end_to_end_seconds", "Seconds from a run's start to its final status"),
}


def key() -> str:
    """The Redis hash that holds every counter."""
    return keys.metrics_key()


def _le(bound: float) -> str:
    """A bucket's upper bound as its `le` label (1.0, 0.005, +Inf)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _field(*parts: str) -> str:
    # JSON, so any task_type (it may hold ':' or '|') round-trips exactly.
    return json.dumps(parts, separators=(",", ":"))


def _client() -> redis.Redis:
    return client()


def _incr(counts: dict[str, int], floats: dict[str, float] | None = None) -> None:
    """HINCRBY each field in one round trip. Never raises: metrics must not break the work. After a Redis
    failure, skipped for TASKHUB_REDIS_BREAKER_SECONDS (tasks_app/ops/breaker.py): a create must not pay
    the timeout again on every request of an outage, for a count."""
    server = server_of(settings.REDIS_URL)
    if not redis_breaker.allows(server):
        log.debug("metrics not recorded: Redis at %s failed moments ago", server)
        return
    try:
        pipe = _client().pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(key(), name, n)
        for name, x in (floats or {}).items():
            pipe.hincrbyfloat(key(), name, x)
        pipe.execute()  # type: ignore[no-untyped-call]
    except (redis.RedisError, OSError) as exc:
        if not is_outage(exc):
            log.warning("metrics not recorded (Redis): %s", exc)
            return
        redis_breaker.failed(server)
        log.warning(
            "metrics not recorded (Redis), nor tried again for %gs: %s", settings.TASKHUB_REDIS_BREAKER_SECONDS, exc
        )
        return
    except Exception:  # a metric is never worth a failed request
        log.exception("metrics not recorded")
        return
    redis_breaker.succeeded(server)


class _Pending:
    """Counts recorded in this process and not yet sent: a flusher thread sends them together, at most
    TASKHUB_METRICS_FLUSH_SECONDS after they were recorded, in one round trip instead of one per create
    or batch (0: at once, on the caller's thread). A process that dies loses at most that much counting,
    as a Prometheus client library's own counters would lose all of theirs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._floats: dict[str, float] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, counts: dict[str, int], floats: dict[str, float] | None = None) -> None:
        interval = float(settings.TASKHUB_METRICS_FLUSH_SECONDS)
        if interval <= 0:
            _incr(counts, floats)
            return
        with self._lock:
            self._counts.update(counts)
            for name, x in (floats or {}).items():
                self._floats[name] = self._floats.get(name, 0.0) + x
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked from the one that had it
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, args=(interval,), name="metrics-flush", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            counts, floats = dict(self._counts), dict(self._floats)
            self._counts.clear()
            self._floats.clear()
        if counts or floats:
            _incr(counts, floats)

    def _run(self, interval: float) -> None:
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            self.flush()


_pending = _Pending()
atexit.register(_pending.flush)


def flush() -> None:
    """Send what this process has counted and not sent yet (read_counters does, before it reads)."""
    _pending.flush()


def _on_commit(counts: dict[str, int], floats: dict[str, float] | None = None) -> None:
    if counts:
        transaction.on_commit(partial(_pending.add, counts, floats), robust=True)


def _bucket(bounds: tuple[float, ...], value: float) -> str:
    """The `le` of the bucket a value falls in (its own bucket only: buckets are summed at scrape time)."""
    return _le(next((b for b in bounds if value <= b), float("inf")))


# --- recording ---------------------------------------------------------------------------------


def count_created(task_type: str, n: int = 1) -> None:
    """Tasks were created (n of one type); counted when the transaction commits (at once outside of one)."""
    _on_commit({_field("created", task_type): n})


def count_finished(changes: Iterable[tuple[str, str]]) -> None:
    """Applied status changes as (task_type, to_status); those to a final status are counted when
    the transaction commits."""
    counted = Counter(_field("finished", ttype, status) for ttype, status in changes if status in TERMINAL)
    _on_commit(dict(counted))


def count_ignored_reports(n: int) -> None:
    """Node reports the writers ignored because they were about another run than the task's current
    one (an old attempt, a deleted task's), counted when the batch commits."""
    _on_commit({_field("reports_ignored"): n})


def count_refused_updates(n: int) -> None:
    """Updates the writers refused by the status rules (a change that landed between /task_update's own
    check and the writer's), counted when the batch commits: refused, so never silently."""
    _on_commit({_field("updates_refused"): n})


def count_dead_lettered(n: int) -> None:
    """Update-stream entries a writer moved to the dead-letter stream, counted when its batch commits."""
    _on_commit({_field("dead_lettered"): n})


def count_purged(n: int) -> None:
    """Finished tasks deleted by retention (tasks_app/ops/retention.py), after their batch committed."""
    if n > 0:
        _incr({_field("purged"): n})


def observe_run_latencies(samples: Iterable[tuple[str, str, str, float]]) -> None:
    """Finished runs' durations as (measure, task_type, node, seconds), measure one of LATENCY_HISTOGRAMS;
    observed when the transaction commits."""
    # Counted by (measure, type, node, bucket) first: a writer batch of a thousand runs has a few distinct
    # series, and a field name (JSON) per sample was a third of this function's cost.
    buckets: Counter[tuple[str, str, str, str]] = Counter()
    sums: dict[tuple[str, str, str], float] = {}
    for measure, task_type, node, seconds in samples:
        buckets[(measure, task_type, node, _bucket(LATENCY_BUCKETS, seconds))] += 1
        sums[(measure, task_type, node)] = sums.get((measure, task_type, node), 0.0) + seconds
    counts = {_field("latency", m, t, n, "bucket", le): c for (m, t, n, le), c in buckets.items()}
    floats = {_field("latency", m, t, n, "sum"): v for (m, t, n), v in sums.items()}
    _on_commit(counts, floats)


def observe_writer_batch(*, entries: int, seconds: float) -> None:
    """One committed writer batch: its size in entries and its duration."""
    counts: dict[str, int] = {}
    floats: dict[str, float] = {}
    for name, value in (("batch_size", float(entries)), ("batch_seconds", seconds)):
        counts[_field(name, "bucket", _bucket(_HISTOGRAMS[name], value))] = 1
        counts[_field(name, "count")] = 1
        floats[_field(name, "sum")] = value
    _pending.add(counts, floats)


# --- reading -----------------------------------------------------------------------------------


def read_counters() -> dict[tuple[str, ...], float]:
    """Every stored counter, by its parts: ("created", type), ("finished", type, status), ..."""
    flush()  # this process's own counts too
    raw: dict[bytes, bytes] = _client().hgetall(key())  # type: ignore[assignment]
    out: dict[tuple[str, ...], float] = {}
    for name, value in raw.items():
        try:
            parts = json.loads(name)
            out[tuple(str(p) for p in parts)] = float(value)
        except (ValueError, TypeError):
            continue  # not ours
    return out


def stream_lag_seconds(now: float | None = None) -> float:
    """Age of the oldest update that no writer has applied yet (0 when there is none), from its
    stream id's millisecond part. Entries already applied but not yet trimmed do not count."""
    from tasks_app.tasks.models import StreamOffset

    offsets = dict(StreamOffset.objects.values_list("shard", "last_id"))
    pipe = _client().pipeline(transaction=False)
    for shard in range(keys.shard_count()):
        pipe.xrange(keys.stream_key(shard), min=f"({offsets.get(shard, '0-0')}", max="+", count=1)
    oldest_ms: float | None = None
    for entries in pipe.execute():  # type: ignore[no-untyped-call]
        if entries:
            sid = entries[0][0]
            ms = int((sid.decode() if isinstance(sid, bytes) else str(sid)).split("-")[0])
            oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
    if oldest_ms is None:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - oldest_ms / 1000)


def _cumulative(bounds: tuple[float, ...], counts: dict[str, float]) -> list[tuple[str, float]]:
    """Each bucket's count (by `le`, as stored: its own bucket's) summed with those below, as Prometheus
    wants, ending with +Inf."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound in (*bounds, float("inf")):
        le = _le(bound)
        running += counts.get(le, 0.0)
        buckets.append((le, running))
    return buckets


def _histogram(name: str, doc: str, counters: dict[tuple[str, ...], float]) -> HistogramMetricFamily:
    prefix = name.removeprefix("taskhub_writer_")
    counts = {parts[2]: v for parts, v in counters.items() if len(parts) == 3 and parts[:2] == (prefix, "bucket")}
    buckets = _cumulative(_HISTOGRAMS[prefix], counts)
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=counters.get((prefix, "sum"), 0.0))


def _latency_histograms(counters: dict[tuple[str, ...], float]) -> Iterator[HistogramMetricFamily]:
    """One histogram family per measure, one series per (task_type, node) that has observations."""
    counts: dict[tuple[str, str, str], dict[str, float]] = {}
    sums: dict[tuple[str, str, str], float] = {}
    for parts, value in counters.items():
        if parts[0] != "latency" or parts[1] not in LATENCY_HISTOGRAMS:
            continue
        if len(parts) == 6 and parts[4] == "bucket":
            counts.setdefault((parts[1], parts[2], parts[3]), {})[parts[5]] = value
        elif len(parts) == 5 and parts[4] == "sum":
            sums[(parts[1], parts[2], parts[3])] = value
    for measure, (name, doc) in LATENCY_HISTOGRAMS.items():
        family = HistogramMetricFamily(name, doc, labels=["task_type", "node"])
        for (of, task_type, node), by_le in sorted(counts.items()):
            if of == measure:
                buckets = _cumulative(LATENCY_BUCKETS, by_le)
                family.add_metric([task_type, node], buckets, sum_value=sums.get((of, task_type, node), 0.0))
        yield family


class TaskhubCollector(Collector):
    """Reads Redis and the database at scrape time. A source that is down is reported through
    taskhub_metrics_source_up and leaves out its own metrics; the scrape itself still answers."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskhub_metrics_source_up", "1 if the source answered this scrape", labels=["source"])
        redis_ok = True
        try:
            yield from self._from_redis()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            redis_ok = False
        up.add_metric(["redis"], 1.0 if redis_ok else 0.0)
        db_ok = True
        try:
            yield from self._from_database()
        except DatabaseError as exc:
            log.warning("metrics: database unavailable: %s", exc)
            db_ok = False
        up.add_metric(["database"], 1.0 if db_ok else 0.0)
        yield up

    def _from_redis(self) -> Iterator[Metric]:
        from tasks_app.tasks import dead_letters, stream

        counters = read_counters()
        backlog = stream.backlog()
        dead = dead_letters.count()
        try:
            lag = stream_lag_seconds()
        except DatabaseError:
            lag = None  # the offsets are in the database; reported as down below
        created = CounterMetricFamily("taskhub_tasks_created", "Tasks created", labels=["task_type"])
        finished = CounterMetricFamily(
            "taskhub_tasks_finished", "Applied changes to a final status", labels=["task_type", "status"]
        )
        purged = CounterMetricFamily(
            "taskhub_tasks_purged", "Finished tasks deleted by retention", value=counters.get(("purged",), 0.0)
        )
        ignored = CounterMetricFamily(
            "taskhub_reports_ignored",
            "Node reports about another run than the task's current one",
            value=counters.get(("reports_ignored",), 0.0),
        )
        refused = CounterMetricFamily(
            "taskhub_updates_refused",
            "Queued updates the writers refused by the status rules (logged with the reason)",
            value=counters.get(("updates_refused",), 0.0),
        )
        for parts, value in sorted(counters.items()):
            if parts[0] == "created" and len(parts) == 2:
                created.add_metric([parts[1]], value)
            elif parts[0] == "finished" and len(parts) == 3:
                finished.add_metric([parts[1], parts[2]], value)
        yield created
        yield finished
        yield purged
        yield ignored
        yield refused
        yield CounterMetricFamily(
            "taskhub_dead_lettered",
            "Update-stream entries the writers could not apply, moved to the dead-letter stream",
            value=counters.get(("dead_lettered",), 0.0),
        )
        yield GaugeMetricFamily(
            "taskhub_update_stream_backlog", "Entries in the update stream, all shards", value=float(backlog)
        )
        yield GaugeMetricFamily(
            "taskhub_dead_letters", "Dead letters waiting for an operator to inspect and discard", value=float(dead)
        )
        if lag is not None:
            yield GaugeMetricFamily(
                "taskhub_update_stream_lag_seconds", "Age of the oldest update not yet applied", value=lag
            )
        yield _histogram("taskhub_writer_batch_size", "Entries per committed writer batch", counters)
        yield _histogram("taskhub_writer_batch_seconds", "Seconds per committed writer batch", counters)
        yield from _latency_histograms(counters)

    def _from_database(self) -> Iterator[Metric]:
        from tasks_app.fleet.selectors import online_cutoff
        from tasks_app.models import Cluster, GlobalTask

        by_status = dict.fromkeys(STATUS_VALUES, 0)
        rows = GlobalTask.objects.order_by().values_list("task_status").annotate(n=Count("pk"))
        for status, n in rows:
            by_status[status] = n
        tasks = GaugeMetricFamily("taskhub_tasks", "Tasks in the table, by status", labels=["status"])
        for status, n in by_status.items():
            tasks.add_metric([status], float(n))
        nodes = GaugeMetricFamily("taskhub_nodes_online", "Nodes with a recent heartbeat", labels=["cluster"])
        online = Count("nodes", filter=Q(nodes__last_heartbeat__gte=online_cutoff()))
        for name, n in Cluster.objects.order_by("name").annotate(n=online).values_list("name", "n"):
            nodes.add_metric([name], float(n))
        yield tasks
        yield nodes
        yield from self._placement()

    def _placement(self) -> Iterator[Metric]:
        """Each node's scheduling state, capacity and reserved capacity, so that an alert can fire on a node
        left cordoned or a resource running out before creates start failing as unschedulable."""
        from tasks_app.fleet.placement import capacity_of
        from tasks_app.fleet.selectors import node_loads
        from tasks_app.models import Node

        rows = list(Node.objects.values_list("name", "cluster__name", "scheduling", "capacity", "capacity_blocks"))
        loads = node_loads([r[0] for r in rows])
        states = GaugeMetricFamily("taskhub_nodes", "Registered nodes", labels=["cluster", "scheduling"])
        capacity = GaugeMetricFamily("taskhub_node_capacity", "What a node offers", labels=["node", "resource"])
        reserved = GaugeMetricFamily(
            "taskhub_node_reserved", "Capacity reserved by a node's unfinished tasks", labels=["node", "resource"]
        )
        counts = Counter((cluster, scheduling) for _, cluster, scheduling, _, _ in rows)
        for (cluster, scheduling), n in sorted(counts.items()):
            states.add_metric([cluster, scheduling], float(n))
        for name, _, _, declared, blocks in rows:
            offered = capacity_of(declared if isinstance(declared, dict) else {}, blocks)
            taken = loads[name].reserved
            for resource in sorted(set(offered) | set(taken)):
                if resource in offered:
                    capacity.add_metric([name, resource], float(offered[resource]))
                reserved.add_metric([name, resource], float(taken.get(resource, 0)))
        yield states
        yield capacity
        yield reserved


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(TaskhubCollector())


def render() -> bytes:
    """The whole exposition, in the Prometheus text format."""
    return generate_latest(REGISTRY)
