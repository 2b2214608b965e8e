"""(d)'s rows of the table: taskhub, each peer configuration, the ratios to the strongest peers, the steady run.

The targets are issue 10's, all ratios but the latency: CPU per fully tracked task at most 2x the
strongest bare Celery's, throughput at least 0.8x the strongest bare Celery configuration and 5x
the django-celery-results peer, created → completed p50 at most 25 ms at 50 tasks/s, and the node
worker's and the writer's RSS at the end of the steady run within 10% of what it was after warm-up.
"""

from __future__ import annotations

from bench import e2e_throughput as e2e
from bench import peers
from bench.config import Config
from bench.e2e_steady import WATCH_S, Steady
from bench.report import Row

CPU_RATIO_MAX = 2.0
BARE_RATIO_MIN = 0.8
DCR_RATIO_MIN = 5.0
LATENCY_P50_MAX_MS = 25.0
RSS_GROWTH_MAX = 0.10


def _run_detail(runs: list[e2e.Run], what: str, threads: int) -> str:
    m = e2e.median(runs)
    return (
        f"median of {len(runs)} ({e2e.spread(runs)}); {m.tasks:,} tasks in {m.seconds:.2f} s; {what} done after "
        f"{m.send_seconds:.2f} s ({m.send_rate:,.0f}/s, {threads} threads), {m.backlog} then; {m.check}; "
        f"CPU/task {e2e.cpu_text(m)}; peak RSS {runs[-1].rss}"  # VmHWM only grows: the last round's is the peak
    )


def rows(cfg: Config, result: e2e.Result) -> list[Row]:
    from django.conf import settings

    th = e2e.median(result.taskhub)
    prefetch = settings.CELERY_WORKER_PREFETCH_MULTIPLIER
    bare, dcr = result.strongest(peers.BARE), result.strongest(peers.DCR)
    out = [
        Row(
            "d",
            "noop, taskhub: task_create → completed in the table",
            f"{th.rate:,.0f} tasks/s",
            _run_detail(result.taskhub, "creates", cfg.e2e_threads)
            + f"; 1 writer, node worker threads x{e2e.CONCURRENCY}, prefetch x{prefetch}",
        )
    ]
    for p in result.peers:
        strongest = " (strongest)" if p in (bare, dcr) else ""
        out.append(
            Row(
                "d",
                f"{p.peer.label}{strongest}",
                f"{p.median.rate:,.0f} tasks/s",
                f"{p.peer.settings}; " + _run_detail(p.runs, "sends", cfg.e2e_threads),
            )
        )
    cpu_ratio = th.cpu_ms / bare.median.cpu_ms if bare.median.cpu_ms else 0.0
    bare_ratio = th.rate / bare.median.rate if bare.median.rate else 0.0
    dcr_ratio = th.rate / dcr.median.rate if dcr.median.rate else 0.0
    out += [
        Row(
            "d",
            f"CPU per task: taskhub ÷ bare Celery {bare.peer.pool.label}",
            f"{cpu_ratio:.1f}x",
            f"{th.cpu_ms:.2f} ms ÷ {bare.median.cpu_ms:.2f} ms, all processes on each path, median rounds",
            f"≤ {CPU_RATIO_MAX:g}x",
            cpu_ratio <= CPU_RATIO_MAX,
        ),
        Row(
            "d",
            f"throughput: taskhub ÷ bare Celery {bare.peer.pool.label} (strongest)",
            f"{bare_ratio:.2f}x",
            f"{th.rate:,.0f} ÷ {bare.median.rate:,.0f} tasks/s, medians",
            f"≥ {BARE_RATIO_MIN:g}x",
            bare_ratio >= BARE_RATIO_MIN,
        ),
        Row(
            "d",
            f"throughput: taskhub ÷ django-celery-results {dcr.peer.pool.label} (strongest)",
            f"{dcr_ratio:.2f}x",
            f"{th.rate:,.0f} ÷ {dcr.median.rate:,.0f} tasks/s, medians",
            f"≥ {DCR_RATIO_MIN:g}x",
            dcr_ratio >= DCR_RATIO_MIN,
        ),
    ]
    if result.steady is not None:
        out += _steady_rows(cfg, result.steady)
    return out


def _steady_rows(cfg: Config, steady: Steady) -> list[Row]:
    lat = steady.latency
    minutes = f"{steady.seconds / 60:.1f} min"
    out = [
        Row(
            "d",
            f"latency created → completed, {cfg.e2e_rate}/s steady for {cfg.steady_minutes:g} min",
            f"p50 {lat.p50_ms:.0f} ms",
            f"p99 {lat.p99_ms:.0f} ms, max {lat.max_ms:.0f} ms; {lat.samples:,} tasks created one at a time at "
            f"{lat.offered_rate:.1f}/s over {minutes}; creation row's `at` → row seen completed (polled every "
            f"{WATCH_S * 1000:g} ms)",
            f"p50 ≤ {LATENCY_P50_MAX_MS:g} ms",
            lat.p50_ms <= LATENCY_P50_MAX_MS,
        ),
        Row(
            "d",
            "  its stages, p50 (p99), ms (diagnostic)",
            "",
            "; ".join(f"{k} {p50:.0f} ({p99:.0f})" for k, (p50, p99) in lat.stages.items())
            + f"; from the stream tap, {lat.tapped:,}/{lat.samples:,} tasks",
        ),
    ]
    for name, who in (("node", "node worker"), ("writer", "writer")):
        growth = steady.growth(name)
        out.append(
            Row(
                "d",
                f"memory: {who} RSS at the end ÷ after warm-up",
                f"{growth:+.1%}",
                f"{steady.rss_warm[name] / 1024:.1f} MB after {steady.warmup_s:.0f} s → "
                f"{steady.rss_end[name] / 1024:.1f} MB when the last of {lat.samples:,} tasks completed (VmRSS)",
                f"within ±{RSS_GROWTH_MAX:.0%}",
                abs(growth) <= RSS_GROWTH_MAX,
            )
        )
    return out
