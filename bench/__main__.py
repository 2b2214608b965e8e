"""`python -m bench`: run every measurement against PostgreSQL and Redis, print one table.

(a) POST /task req/s vs bare Django; (b) writer updates/s vs one UPDATE per message;
(c) GET /tasks p50/p99 on 1M rows; (d) end to end, noop tasks created -> completed vs bare Celery at
its best and Celery + django-celery-results, with CPU and memory per process, then latency and
memory at a steady rate; (e) bulk create, in process and over HTTP; (p) placement: single creates/s
and latency per assignment rule on 3 and 30 nodes (bench/placement.py); (s) event streams: GET /tasks
p50/p99 with 100 open GET /api/v1/events/ clients vs idle, on the shipped gunicorn.conf.py (bench/streams.py);
(g) growth: lists at 1M and 10M rows, end to end with 1, 3 and 10 node workers, fleet scale (bench/growth.py).
`--only d` (or `--only a,c`, ...) runs some of them. Child processes are stopped and the bench's own Redis keys and
scratch rows removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from typing import Any

from bench import config, db, procs
from bench.report import Row, machine, render


def _on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


SECTIONS = ("a", "b", "c", "d", "e", "p", "s", "g")


def run(cfg: config.Config, sections: tuple[str, ...] = SECTIONS) -> None:
    from bench import e2e_throughput, list_latency, load, writer_throughput
    from bench import http_throughput as ht

    t_start = time.perf_counter()
    load_before = _load_average()
    print(f"bench database {cfg.database_name}, Redis {cfg.redis_url} (keys {config.STREAM_PREFIX}:*)", flush=True)
    db.ensure_database(cfg)
    db.migrate(cfg)
    config.setup_django(cfg)
    db.remove_scratch(cfg)
    writer_throughput.delete_stream_keys()
    if "c" in sections or "g" in sections:  # (g) measures the list on these 1M rows too
        have, load_s = db.ensure_bulk_rows(cfg)
        if load_s is None:
            print("reusing the loaded rows; rebuilding their indexes ...", flush=True)
            db.reindex(cfg)
        db.vacuum_analyze(cfg)
        loaded = f"loaded in {load_s:.0f} s" if load_s is not None else "reused from an earlier run"
    else:
        have, loaded = db.bulk_row_count(cfg), "as found"
    wrk = None
    if "a" in sections:
        wrk = load.ensure_wrk()
        if wrk is None:
            print("wrk unavailable: falling back to the Python load generator", flush=True)

    rows: list[Row] = []
    servers: list[procs.Server] = []
    if "a" in sections or "c" in sections:
        prod = procs.Server("taskhub", config.child_env(cfg), cfg.workers, "/healthz")
        servers.append(prod)
    if "a" in sections:
        bare = procs.Server("bare", config.child_env(cfg, "bench.settings_bare"), cfg.workers, "/noop")
        diag = procs.Server("prod-noop", config.child_env(cfg, "bench.settings_prod_noop"), cfg.workers, "/healthz")
        servers += [bare, diag]

    if "c" in sections:
        print("(c) GET /tasks latency, over HTTP and in process ...", flush=True)
        http_lat = list_latency.over_http(cfg, prod.host, prod.port)
        inproc_lat = list_latency.in_process(cfg)
        plan = list_latency.explain(cfg)

    if "a" in sections:
        print(f"(a) POST /task and baselines: {cfg.rounds} interleaved rounds of {cfg.duration_s} s ...", flush=True)
        targets = [(prod, ht.POST_TASK), (bare, ht.BARE_NOOP), (bare, ht.BARE_INSERT), (diag, ht.PROD_NOOP)]
        measured = ht.measure_interleaved(targets, wrk, cfg.duration_s, cfg.http_connections, cfg.rounds)
    for server in servers:
        server.close()
    if "a" in sections:
        rows += _rows_a(cfg, measured, ht.rows_created("bench_post"))

    if "b" in sections:
        print(
            f"(b) writer: batched in process and one UPDATE per message, {cfg.rounds} interleaved rounds ...",
            flush=True,
        )
        batched_runs, baseline_runs = [], []
        for _ in range(cfg.rounds):
            batched_runs.append(writer_throughput.batched_in_process(cfg))
            baseline_runs.append(writer_throughput.one_update_per_message(cfg))
            db.remove_scratch(cfg)  # the next round starts from the same table
        processes = []
        for count in cfg.writer_processes:
            print(f"(b) writer: {count} run_writer process(es) ...", flush=True)
            processes.append(writer_throughput.writer_process(cfg, count))
        rows += _rows_b(batched_runs, baseline_runs, processes)

    if "c" in sections:
        rows += _rows_c(http_lat, inproc_lat)

    if "d" in sections:
        db.remove_scratch(cfg)
        print(
            f"(d) end to end: {cfg.rounds} interleaved rounds of {cfg.e2e_tasks:,} noop tasks, taskhub, "
            f"bare Celery per pool and Celery + django-celery-results ...",
            flush=True,
        )
        rows += _rows_d(cfg, e2e_throughput.measure(cfg))

    if "e" in sections:
        from bench import bulk_create

        print("(e) bulk create: in process and over HTTP ...", flush=True)
        rows += bulk_create.measure(cfg)  # bench/bulk_create.py; removes its own rows

    if "p" in sections:
        from bench import placement

        print("(p) placement: single creates per assignment rule ...", flush=True)
        rows += placement.measure(cfg)  # bench/placement.py; removes its own rows, nodes and queues

    if "s" in sections:
        from bench import streams

        db.remove_scratch(cfg)
        print("(s) event streams: GET /tasks idle and with 100 streams open ...", flush=True)
        rows += streams.measure(cfg)  # bench/streams.py; on the rows as found (c's 1M when it ran)

    if "g" in sections:
        from bench import growth

        db.remove_scratch(cfg)
        rows += growth.measure(cfg)  # (g) growth: bench/growth.py

    from django.conf import settings

    info: Any = writer_throughput.redis_client().info("server")
    redis_version = str(info.get("redis_version", "?"))
    title = f"taskhub benchmarks — PostgreSQL, {have:,} rows in global_task ({loaded})"
    if sections != SECTIONS:
        title += f"; sections {', '.join(sections)} only"
    caption = (
        machine(db.server_version(cfg), redis_version, wrk, cfg.workers, http="a" in sections)
        + f"\nstream: {settings.TASKHUB_STREAM_SHARDS} shards, TASKHUB_WRITER_BATCH={settings.TASKHUB_WRITER_BATCH}; "
    )
    if "b" in sections:
        caption += f"{cfg.writer_tasks:,} tasks x 3 updates per writer run; "
    caption += (
        f"load average {load_before} before, {_load_average()} after; whole bench {time.perf_counter() - t_start:.0f} s"
    )
    render(rows, title, caption)
    if "c" in sections:
        print("\nplan of one first page:\n" + plan)


def _rows_a(cfg: config.Config, measured: Any, created: int) -> list[Row]:
    rows: list[Row] = []
    post, noop, insert = measured["post"], measured["noop"], measured["insert"]
    for m in (post, noop, insert, measured["prod_noop"]):
        med = m.median
        detail = f"rounds {m.spread()} req/s; p50 {med.p50_ms:.1f} ms, p99 {med.p99_ms:.1f} ms; {m.errors} errors"
        if m is post:
            detail += f"; {created:,} rows created"
        rows.append(Row("a", m.endpoint.label, f"{m.rps:,.0f} req/s", detail))
    r_noop = post.rps / noop.rps if noop.rps else 0.0
    r_insert = post.rps / insert.rps if insert.rps else 0.0
    how = f"{post.median.tool}, {cfg.http_connections} conns, {cfg.workers} workers"
    rows.append(Row("a", "POST /task ÷ bare no-op", f"{r_noop:.0%}", how, "≥ 60% (strict: the target)", r_noop >= 0.6))
    rows.append(
        Row("a", "POST /task ÷ bare ORM INSERT", f"{r_insert:.0%}", "", "≥ 60% (lenient reading)", r_insert >= 0.6)
    )
    return rows


def _rows_b(batched_runs: list[Any], baseline_runs: list[Any], processes: list[Any]) -> list[Row]:
    from bench import writer_throughput

    batched, baseline = writer_throughput.median(batched_runs), writer_throughput.median(baseline_runs)
    rows: list[Row] = []
    ratio = batched.rate / baseline.rate if baseline.rate else 0.0
    rows.append(
        Row(
            "b",
            f"writer, {batched.label}",
            f"{batched.rate:,.0f} upd/s",
            f"median of {len(batched_runs)} ({writer_throughput.spread(batched_runs)}); "
            f"{batched.messages:,} updates in {batched.seconds:.2f} s; {batched.check}",
            "≥ 10,000 upd/s",
            batched.rate >= 10_000,
        )
    )
    rows.append(
        Row(
            "b",
            baseline.label,
            f"{baseline.rate:,.0f} upd/s",
            f"median of {len(baseline_runs)} ({writer_throughput.spread(baseline_runs)}); "
            f"{baseline.messages:,} updates in {baseline.seconds:.2f} s; {baseline.check}",
        )
    )
    rows.append(Row("b", "batched (in-process) ÷ baseline", f"{ratio:.1f}x", "medians", "≥ 5x", ratio >= 5))
    for p in processes:
        rows.append(
            Row(
                "b",
                f"writer, {p.label}",
                f"{p.rate:,.0f} upd/s",
                f"{p.messages:,} updates in {p.seconds:.2f} s; {p.check}",
                "≥ 10,000 upd/s",
                p.rate >= 10_000,
            )
        )
    return rows


def _rows_c(http_lat: Any, inproc_lat: Any) -> list[Row]:
    return [
        Row(
            "c",
            "GET /tasks?task_type=X&task_status=Y over HTTP",
            f"p99 {http_lat.p99_ms:.1f} ms",
            f"p50 {http_lat.p50_ms:.1f} ms, max {http_lat.max_ms:.1f} ms; {http_lat.samples} sequential "
            f"requests, {http_lat.rows_per_page} rows/page",
            "p99 < 20 ms",
            http_lat.p99_ms < 20,
        ),
        Row(
            "c",
            "selectors.task_list_page() in process",
            f"p99 {inproc_lat.p99_ms:.1f} ms",
            f"p50 {inproc_lat.p50_ms:.1f} ms, max {inproc_lat.max_ms:.1f} ms; {inproc_lat.samples} calls",
            "p99 < 20 ms",
            inproc_lat.p99_ms < 20,
        ),
    ]


def _rows_d(cfg: config.Config, result: Any) -> list[Row]:
    from bench import e2e_rows

    return e2e_rows.rows(cfg, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections to run: a (POST /task), b (writer), c (GET /tasks), d (end to end), "
        "e (bulk create), p (placement), s (event streams: GET /tasks with 100 streams open), "
        "g (growth: lists at 1M and 10M rows, 1/3/10 node workers, fleet scale)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in SECTIONS if s in {p.strip() for p in args.only.split(",")})
    if not sections or not {p.strip() for p in args.only.split(",")} <= set(SECTIONS):
        parser.error(f"--only takes some of {', '.join(SECTIONS)}")
    cfg = config.load()
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        run(cfg, sections)
        shutil.rmtree(procs.LOG_DIR, ignore_errors=True)  # kept when a run fails, for its server logs
        return 0
    finally:
        procs.stop_all()
        try:
            from django.apps import apps

            if apps.ready:
                from bench import e2e_throughput, writer_throughput

                writer_throughput.delete_stream_keys()
                e2e_throughput.delete_keys(writer_throughput.redis_client())
                db.remove_scratch(cfg)
        except Exception as exc:
            print(f"cleanup: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
