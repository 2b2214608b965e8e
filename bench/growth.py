"""(g) Growth: how cost grows with work.

* the filtered list's first page and cursor follow at 1M rows (the bench database's, as (c)) and at 10M
  rows (a database of its own, `<bench database>_growth`, loaded once and kept: bench/growth_lists.py);
* end to end with 1, 3 and 10 node workers (bench/growth_e2e.py);
* fleet scale: 50 live node workers and 1,000 more heartbeating nodes, with the heartbeats', the sweeps'
  and the dashboard's costs (bench/growth_fleet.py).

Writer throughput with 1, 2 and 4 processes is section (b)'s (BENCH_WRITER_PROCESSES).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench import db, growth_config, growth_e2e, growth_fleet
from bench.config import PYTHON, ROOT, Config, child_env
from bench.growth_lists import MARK
from bench.procs import Server
from bench.report import Row

LIST_TARGET_MS = 20.0


def _lists(cfg: Config, label: str) -> dict[str, Any]:
    """bench.growth_lists in a child on cfg's database, with a gunicorn on it for the HTTP figures."""
    env = child_env(cfg)
    with Server(f"growth-{label}", env, cfg.workers, "/healthz") as server:
        argv = [PYTHON, "-m", "bench.growth_lists", "--task-types", str(cfg.task_types),
                "--samples", str(cfg.latency_requests), "--http", f"{server.host}:{server.port}"]  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"bench.growth_lists on {cfg.database_name} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(line.removeprefix(MARK))
    return result


def _prepare_big(cfg: Config, g: growth_config.Growth) -> tuple[Config, str]:
    big = g.big(cfg)
    db.ensure_database(big)
    db.migrate(big)
    db.remove_scratch(big)  # nothing but the bulk rows is ever written there; a failed run's leftovers go
    _, load_s = db.ensure_bulk_rows(big)
    if load_s is None:
        return big, f"reused from an earlier run ({big.database_name})"
    started = time.perf_counter()
    db.vacuum_analyze(big)
    return big, f"loaded in {load_s:.0f} s, VACUUM ANALYZE {time.perf_counter() - started:.0f} s ({big.database_name})"


def measure(cfg: Config) -> list[Row]:
    g = growth_config.load(cfg)
    rows: list[Row] = []

    print(f"(g) list at {cfg.rows:,} and {g.rows:,} rows ...", flush=True)
    # The 1M rows are (c)'s: bench/__main__.py has loaded (or re-indexed) and analyzed them.
    big, big_loaded = _prepare_big(cfg, g)
    print(f"(g) {g.rows:,} rows {big_loaded}", flush=True)
    small_lists, big_lists = _lists(cfg, "small"), _lists(big, "big")
    print(f"(g) plan of a v1 cursor follow at {g.rows:,} rows:\n{big_lists['plan_v1_follow']}", flush=True)
    rows += _list_rows(cfg.rows, g.rows, small_lists, big_lists, big_loaded)

    stack = growth_e2e.Stack(cfg, g)
    try:
        stack.start_writer()
        e2e = growth_e2e.measure(stack)
        rows += _e2e_rows(cfg, e2e)
        try:
            fleet = growth_fleet.measure(stack)
        finally:
            growth_fleet.remove(stack)
        rows += _fleet_rows(cfg, fleet)
    finally:
        stack.close()
    return rows


# --- rows ------------------------------------------------------------------------------------------

_LISTS = (
    ("http_first", "GET /tasks?task_type=X&task_status=Y, first page, over HTTP", True),
    ("seed_first", "  the same, selectors.task_list_page() in process", True),
    ("http_follow", "GET /tasks …&after=<cursor>, next page, over HTTP", False),
    ("seed_follow", "  the same, task_list_page(after=) in process", False),
    ("v1_first", "/api/v1/tasks/?task_type=&task_status=, first page, view in process", False),
    ("v1_follow", "/api/v1/tasks/ …&after=<cursor>, next page, view in process", False),
)


def _n(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows:,}"


def _list_rows(small: int, big: int, s: dict[str, Any], b: dict[str, Any], loaded: str) -> list[Row]:
    out = []
    for key, label, targeted in _LISTS:
        lb, ls = b[key], s[key]
        detail = (
            f"p50 {lb['p50_ms']:.1f}, max {lb['max_ms']:.1f} ms at {_n(big)}; at {_n(small)}: p50 "
            f"{ls['p50_ms']:.1f}, p99 {ls['p99_ms']:.1f} ms; {lb['samples']} calls, {lb['rows']}+ rows/page"
        )
        if key.endswith("follow"):
            detail += "; cursors at random points"
        target = f"p99 ≤ {LIST_TARGET_MS:.0f} ms at {_n(big)} rows" if targeted else ""
        met = lb["p99_ms"] <= LIST_TARGET_MS if targeted else None
        out.append(Row("g", label, f"p99 {lb['p99_ms']:.1f} ms at {_n(big)}", detail, target, met))
    out.append(
        Row(
            "g",
            "dashboard's task_counts() (one GROUP BY over the table)",
            f"{b['task_counts_ms']:,.0f} ms at {_n(big)}",
            f"{s['task_counts_ms']:,.0f} ms at {_n(small)}; median of 3",
        )
    )
    out.append(Row("g", f"{_n(big)}-row table", "", loaded))
    return out


def _e2e_rows(cfg: Config, e2e: list[tuple[growth_e2e.Run, list[growth_e2e.Run], float]]) -> list[Row]:
    out = []
    base = e2e[0][0].rate if e2e else 0.0
    for med, runs, startup in e2e:
        ratio = f"; {med.rate / base:.2f}x the {e2e[0][0].nodes}-node rate" if base and med is not e2e[0][0] else ""
        out.append(
            Row(
                "g",
                f"noop end to end, {med.nodes} node worker{'s' if med.nodes > 1 else ''} (run_node)",
                f"{med.rate:,.0f} tasks/s",
                f"median of {len(runs)} ({growth_e2e.spread(runs)}){ratio}; {med.tasks:,} tasks, "
                f"{cfg.e2e_threads} creating threads, 1 writer; {med.check}; workers added in {startup:.0f} s",
            )
        )
        out.append(Row("g", "  CPU per task (diagnostic)", "", growth_e2e.cpu_text(med)))
    return out


def _pct(cpu_s: float, window_s: float) -> str:
    return f"{cpu_s / window_s:.1%}"


def _fleet_rows(cfg: Config, f: growth_fleet.Fleet) -> list[Row]:
    rss = f.rss_mb
    w = f.window_s
    total = f.live + f.sim
    beats = f.beat_rate * w
    # What the heartbeats add: the live workers' own share is the same in both windows, so it is left out.
    extra = {k: f.beating_cpu[k] - f.idle_cpu.get(k, 0.0) for k in f.beating_cpu if k != "nodes"}
    beat_cost = sum(extra.values())
    parts = ", ".join(f"{k} {_pct(v, w)} ({v * 1e6 / beats:,.0f} µs/beat)" for k, v in extra.items() if beats)
    idle_nodes = f.idle_cpu.get("nodes", 0.0)
    out = [
        Row(
            "g",
            f"{f.live} live node workers (run_node, threads x4), idle",
            f"{sum(rss):,.0f} MB RSS",
            f"{sum(rss) / len(rss):.0f} MB each (max {max(rss):.0f}); CPU {_pct(idle_nodes, w)} of a core for all "
            f"({idle_nodes / w / f.live:.2%} each); Redis {_pct(f.idle_cpu['Redis'], w)}, writer "
            f"{_pct(f.idle_cpu['writer'], w)}, PostgreSQL {_pct(f.idle_cpu['PostgreSQL'], w)} meanwhile; "
            f"{f.added} of them started at once in {f.startup_s:.0f} s",
        ),
        Row(
            "g",
            f"{f.sim:,} more nodes' heartbeats, one process, every {f.interval_s:g} s",
            f"{_pct(beat_cost, w)} of a core",
            f"{f.beat_rate:,.0f} beats/s; over the idle window: {parts}; {f.online:,}/{total:,} nodes online in "
            f"the table; stream backlog {f.backlog:,} at the end (applied {f.drain_s:.1f} s after the beats "
            f"stopped); the simulator at most {f.behind_s:.2f} s behind schedule",
        ),
    ]
    for name, t in f.sweeps.items():
        out.append(Row("g", f"{name}, {total:,} nodes heartbeating", f"p50 {t.p50_ms:,.1f} ms",
                       f"max {t.max_ms:,.1f} ms; {t.samples} calls; last returned {t.result}"))  # fmt: skip
    if f.mass_offline is not None:
        out.append(
            Row(
                "g",
                f"dead-node sweep, {f.sim:,} nodes silent at once",
                f"{f.mass_offline.p50_ms:,.0f} ms",
                f"{f.mass_offline.result} nodes taken offline in one sweep (each: alive key, claim, its tasks)",
            )
        )
    page = f.dashboard.get("whole page")
    if page is not None:
        parts = "; ".join(f"{k} {t.p50_ms:,.1f} ms ({t.result})" for k, t in f.dashboard.items() if k != "whole page")
        out.append(
            Row(
                "g",
                f"admin dashboard, {total:,} nodes, {_n(cfg.rows)} tasks, in process",
                f"p50 {page.p50_ms:,.0f} ms",
                f"max {page.max_ms:,.0f} ms, {page.result}, {page.samples} renders; its reads, p50: {parts}",
            )
        )
    return out
