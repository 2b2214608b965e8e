"""(b) Status updates applied per second: the batched writer beside one UPDATE per message.

Each run gets tasks of its own (task_type bench_writer_*) and pushes three updates for each,
received -> in_progress -> completed, in rounds (every task's first update, then every task's
second, ...), the order many tasks progressing at once produce. Entries have push()'s format.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from bench.config import PYTHON, ROOT, STREAM_PREFIX, Config, child_env
from bench.procs import spawn, stop

_ROUNDS = (
    ("received", {"node": "bench-node-1"}),
    ("in_progress", {"progress": 50}),
    ("completed", {"result": "ok"}),
)
_SOURCE = "bench"


@dataclass(frozen=True)
class Throughput:
    label: str
    messages: int
    seconds: float
    check: str  # what the database holds afterwards

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def median(runs: list[Throughput]) -> Throughput:
    return sorted(runs, key=lambda t: t.rate)[len(runs) // 2]


def spread(runs: list[Throughput]) -> str:
    return f"{min(t.rate for t in runs):,.0f} to {max(t.rate for t in runs):,.0f}/s"


def redis_client() -> redis.Redis:
    from workers.protocol.connection import client

    return client()


def delete_stream_keys() -> None:
    """Only the bench's own keys: the shard streams under its prefix."""
    client = redis_client()
    keys = list(client.scan_iter(match=f"{STREAM_PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)


def _reset_offsets() -> None:
    from tasks_app.models import StreamOffset
    from tasks_app.tasks.writer import ensure_offsets

    delete_stream_keys()
    StreamOffset.objects.all().delete()
    ensure_offsets()


def _create_tasks(task_type: str, count: int) -> list[str]:
    from django.db import connection

    from bench.rows import insert_select

    sql, params = insert_select(
        f"generate_series(1, {int(count)})",
        {
            "task_id": ("gen_random_uuid()::text", []),
            "task_data": ("""'{"k": "v"}'::jsonb""", []),
            "task_type": ("%s", [task_type]),
            "task_update_timestamp": ("extract(epoch FROM now())::bigint", []),
            "task_create_timestamp": ("extract(epoch FROM now())::bigint", []),
            "task_status": ("'pending'", []),
            "task_status_data": ("'{}'::jsonb", []),
        },
        returning="task_id",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [str(r[0]) for r in cursor.fetchall()]


def _push_all(task_ids: list[str]) -> int:
    """XADD every update, pipelined; same fields as the API's push writes (workers/protocol/messages.py)."""
    from workers.protocol import keys as update_stream

    pipe: Any = redis_client().pipeline(transaction=False)
    n = 0
    for status, data in _ROUNDS:
        payload = json.dumps(data, separators=(",", ":"))
        for tid in task_ids:
            fields = {"task_id": tid, "status": status, "source": _SOURCE, "data": payload}
            pipe.xadd(update_stream.stream_key(update_stream.shard_for(tid)), fields)
            n += 1
            if n % 5000 == 0:
                pipe.execute()
    pipe.execute()
    return n


def _check(task_type: str, expected_tasks: int, expect_history: bool) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_status, count(*) FROM global_task WHERE task_type = %s GROUP BY 1 ORDER BY 1", [task_type]
        )
        counts = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*) FROM global_task_history h JOIN global_task t USING (task_id) WHERE t.task_type = %s",
            [task_type],
        )
        history = cursor.fetchone()[0]
    done = counts.get("completed", 0)
    text = f"{done:,}/{expected_tasks:,} completed"
    if expect_history:
        text += f", {history:,} history rows"
    return text


def batched_in_process(cfg: Config) -> Throughput:
    """tasks_app.tasks.writer.run_once() in a loop until the backlog is 0 (TASKHUB_WRITER_BATCH per shard)."""
    from tasks_app.tasks import stream as update_stream
    from tasks_app.tasks import writer

    _reset_offsets()
    task_type = "bench_writer_batched"
    ids = _create_tasks(task_type, cfg.writer_tasks)
    pushed = _push_all(ids)
    started = time.perf_counter()
    applied = 0
    while update_stream.backlog() > 0:
        applied += writer.run_once()
    elapsed = time.perf_counter() - started
    if applied != pushed:
        raise RuntimeError(f"writer applied {applied} entries, {pushed} were pushed")
    return Throughput("in-process run_once() loop", pushed, elapsed, _check(task_type, len(ids), True))


def one_update_per_message(cfg: Config) -> Throughput:
    """Baseline: the same stream read the same way, then one autocommit UPDATE per message.

    No row lock, no status rule, no history row: less work per message than the writer does.
    Stops after cfg.baseline_max_s seconds if the stream is not drained by then.
    """
    from django.db import connection

    from tasks_app.models import now_ts
    from tasks_app.tasks import stream as update_stream
    from workers.protocol import keys

    _reset_offsets()
    task_type = "bench_writer_baseline"
    ids = _create_tasks(task_type, cfg.writer_tasks)
    _push_all(ids)
    last = dict.fromkeys(range(keys.shard_count()), "0-0")
    sql = (
        "UPDATE global_task SET task_status = %s, task_status_data = %s::jsonb, task_update_timestamp = %s "
        "WHERE task_id = %s"
    )
    applied = 0
    started = time.perf_counter()
    deadline = started + cfg.baseline_max_s
    timed_out = False
    with connection.cursor() as cursor:  # Django's default: autocommit, so each UPDATE commits alone
        while not timed_out and update_stream.backlog() > 0:
            for shard in last:
                entries = update_stream.read_after(shard, last[shard], _batch_size())
                for e in entries:
                    u = e.update
                    if u is not None:
                        cursor.execute(sql, [u.status, json.dumps(u.status_data), now_ts(), u.task_id])
                    applied += 1
                    last[shard] = e.stream_id
                    if time.perf_counter() > deadline:
                        timed_out = True
                        break
                if entries:
                    update_stream.trim_upto(shard, last[shard])
                if timed_out:
                    break
    elapsed = time.perf_counter() - started
    check = _check(task_type, len(ids), False)
    if timed_out:
        check += f" (time cap {cfg.baseline_max_s} s)"
    delete_stream_keys()
    return Throughput("baseline: 1 UPDATE + commit per message", applied, elapsed, check)


def _batch_size() -> int:
    from django.conf import settings

    return int(settings.TASKHUB_WRITER_BATCH)


def writer_process(cfg: Config, count: int = 1) -> Throughput:
    """`python manage.py run_writer` as real processes, timed from the moment they may start.

    The backlog is pushed first and the offset rows are held locked (a writer skips locked
    shards) until every writer has started up; releasing them starts the clock. A writer polls
    every 50 ms while it waits, so up to 50 ms of idle time may fall inside the measurement.
    """
    from tasks_app.tasks import stream as update_stream

    _reset_offsets()
    task_type = f"bench_writer_process{count}"
    ids = _create_tasks(task_type, cfg.writer_tasks)
    pushed = _push_all(ids)
    env = child_env(cfg)
    env["LOG_LEVEL"] = "INFO"
    with psycopg.connect(cfg.libpq_url) as hold:
        hold.execute("SELECT shard FROM global_task_stream_offset FOR UPDATE").fetchall()
        writers = [spawn(f"writer-{i}", [PYTHON, str(ROOT / "manage.py"), "run_writer"], env) for i in range(count)]
        try:
            deadline = time.monotonic() + 60
            for proc, log in writers:
                while "writer started" not in log.read_text():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"run_writer did not start: {log.read_text()[-2000:]}")
                    time.sleep(0.05)
            time.sleep(0.5)  # into their loops, skipping the locked shards
            if update_stream.backlog() != pushed:
                raise RuntimeError("a writer applied entries while the offsets were locked")
            hold.commit()  # releases the offset rows
            started = time.perf_counter()
            while update_stream.backlog() > 0:
                for proc, log in writers:
                    if proc.poll() is not None:
                        raise RuntimeError(f"run_writer exited: {log.read_text()[-2000:]}")
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            for proc, _ in writers:
                stop(proc)
    label = f"`manage.py run_writer` x{count} process{'es' if count > 1 else ''}"
    return Throughput(label, pushed, elapsed, _check(task_type, len(ids), True))
