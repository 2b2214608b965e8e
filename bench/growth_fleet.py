"""(g) Fleet scale: 50 live node workers, 1,000 more registered nodes heartbeating from one process
(bench/fleet_beats.py), and what that costs: CPU of the heartbeats (the beating process, Redis, the
writer and PostgreSQL that record them), RSS of the live workers, and the time of the scheduler's
per-node sweeps and of the operator's dashboard with that many nodes.

Two CPU windows of the same length: first the live workers alone (idle), then with the 1,000 nodes'
heartbeats as well; the difference is what the heartbeats cost. Redis's CPU is the whole server's, so
other users of it on a shared machine land in both windows.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import growth_procs as gp
from bench.config import PYTHON, child_env
from bench.fleet_beats import node_names
from bench.growth_e2e import Stack
from bench.procs import LOG_DIR, spawn

SIM_CLUSTER = "growth-fleet"
SIM_PREFIX = "growth-fleet-"
_STAFF = "bench-growth-dashboard"  # a staff account to render the dashboard with, removed after


@dataclass(frozen=True)
class Timing:
    samples: int
    p50_ms: float
    max_ms: float
    result: str = ""


@dataclass
class Fleet:
    live: int
    sim: int
    added: int  # live workers this part started (the e2e part's were up already)
    startup_s: float  # the seconds that took
    interval_s: float
    window_s: float
    idle_cpu: dict[str, float]  # CPU seconds over the window, live workers only
    beating_cpu: dict[str, float]  # the same, with the simulated heartbeats
    beat_rate: float  # heartbeats a second the simulator sent, over whole rounds around the window
    behind_s: float  # how far behind its schedule the simulator fell at worst
    rss_mb: list[float]  # each live worker's, at the end of the windows
    backlog: int  # stream entries waiting for the writer at the end of the beating window
    drain_s: float  # then, how long the writer took to apply them once the beats stopped
    online: int  # nodes the database counts online, of live + sim
    sweeps: dict[str, Timing] = field(default_factory=dict)
    dashboard: dict[str, Timing] = field(default_factory=dict)
    mass_offline: Timing | None = None


def _timed(n: int, call: Callable[[], Any]) -> Timing:
    times, result = [], None
    for _ in range(n):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return Timing(n, statistics.median(times), max(times), str(result))


def _register_sim(n: int) -> None:
    """Bulk rows: registering is set-up here, not what is measured (node_register is one node at a time)."""
    from tasks_app.fleet.services import cluster_ensure
    from tasks_app.models import Node

    cluster = cluster_ensure(name=SIM_CLUSTER)
    Node.objects.bulk_create(
        [Node(cluster=cluster, name=name) for name in node_names(SIM_PREFIX, n)], ignore_conflicts=True
    )


def _remove_sim(stack: Stack, n: int) -> None:
    from tasks_app.models import Cluster, Node
    from workers.protocol import keys

    Node.objects.filter(name__startswith=SIM_PREFIX).delete()
    Cluster.objects.filter(name=SIM_CLUSTER, nodes__isnull=True).delete()
    names = node_names(SIM_PREFIX, n)
    stack.redis.delete(*[keys.alive_key(x) for x in names], *[keys.run_asks_key(x) for x in names])


def _drain(seconds: float) -> int:
    """Wait until the writer has applied everything on the stream (at most `seconds`); the backlog left."""
    from tasks_app.tasks import stream as update_stream

    deadline = time.monotonic() + seconds
    while (left := update_stream.backlog()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _rounds(log_text: str) -> list[tuple[int, int, float]]:
    """(round, beats so far, seconds behind) of each line the simulator printed."""
    out = []
    for line in log_text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "round":
            out.append((int(parts[1]), int(parts[2]), float(parts[3])))
    return out


def _window(stack: Stack, seconds: float, extra: dict[str, gp.Child]) -> dict[str, float]:
    before = stack.begin()
    extra_before = {k: gp.proc_cpu(c.proc.pid) for k, c in extra.items()}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stack.check()
        for child in extra.values():
            child.check()
        stack.pg.sample()
        time.sleep(0.5)
    cpu = stack.cpu(before)
    cpu.pop("bench")  # the bench process only waits here
    for k, c in extra.items():
        cpu[k] = gp.proc_cpu(c.proc.pid) - extra_before[k]
    return cpu


def _dashboard_calls() -> dict[str, Callable[[], Any]]:
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory
    from django.utils import timezone

    from tasks_app.ops import dashboard_selectors as sel
    from tasks_app.ops.dashboard_views import FAILURE_WINDOW, THROUGHPUT_MINUTES, dashboard

    user, _ = get_user_model().objects.get_or_create(username=_STAFF, defaults={"is_staff": True})
    view = admin.site.admin_view(dashboard)

    def render() -> str:
        request = RequestFactory().get("/admin/dashboard/", HTTP_HOST="127.0.0.1")
        request.user = user
        response: Any = view(request)
        response.render()
        if response.status_code != 200:
            raise RuntimeError(f"/admin/dashboard/: HTTP {response.status_code}")
        return f"{len(response.content) // 1024} kB"

    return {
        "whole page": render,
        "nodes()": lambda: f"{len(sel.nodes())} nodes",
        "task_counts()": lambda: f"{sel.task_counts().total:,} tasks",
        "throughput()": lambda: len(sel.throughput(THROUGHPUT_MINUTES)),
        "failures_since()": lambda: len(sel.failures_since(timezone.now() - FAILURE_WINDOW)[0]),
        "stream_state()": lambda: sel.stream_state().backlog,
    }


def measure(stack: Stack) -> Fleet:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from tasks_app.fleet.health import sweep_dead_nodes
    from tasks_app.fleet.selectors import online_cutoff
    from tasks_app.fleet.stalled import sweep_stalled_runs
    from tasks_app.models import Node
    from workers.protocol import keys

    g = stack.growth
    interval = float(settings.TASKHUB_HEARTBEAT_SECONDS)
    print(f"(g) fleet: {g.live_nodes} live node workers ...", flush=True)
    added = max(0, g.live_nodes - len(stack.nodes))
    startup = stack.ensure_nodes(g.live_nodes)
    print(f"(g) fleet: {g.fleet_seconds} s with the live workers alone ...", flush=True)
    idle = _window(stack, g.fleet_seconds, {})
    rss = [gp.proc_rss_mb(c.proc.pid) for c in stack.nodes]

    print(f"(g) fleet: {g.fleet_nodes:,} more nodes heartbeating from one process ...", flush=True)
    _register_sim(g.fleet_nodes)
    env = child_env(stack.cfg, "taskhub.settings_node")
    argv = [PYTHON, "-m", "bench.fleet_beats", str(LOG_DIR / "growth" / "beats"), SIM_PREFIX, str(g.fleet_nodes)]
    proc, log = spawn("growth-fleet-beats", argv, env)
    beater = gp.Child("fleet_beats", proc, log)
    try:
        # Four intervals first: every node beats, the writer catches up, and the nodes' run lists get
        # old enough (TASKHUB_STALLED_GRACE_SECONDS) for the stalled-run sweep to look at them.
        warm = max(4, int(float(settings.TASKHUB_STALLED_GRACE_SECONDS) / interval) + 1)
        deadline = time.monotonic() + g.max_s
        while len(_rounds(log.read_text())) < warm:
            beater.check()
            stack.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the heartbeat simulator did not do {warm} rounds: {log.read_text()[-1000:]}")
            time.sleep(0.2)
        first = _rounds(log.read_text())[-1]
        beating = _window(stack, g.fleet_seconds, {"heartbeating process": beater})
        from tasks_app.tasks import stream as update_stream

        backlog = update_stream.backlog()
        rounds = _rounds(log.read_text())
        last = rounds[-1]
        rate = (last[1] - first[1]) / ((last[0] - first[0]) * interval) if last[0] > first[0] else 0.0
        behind = max(r[2] for r in rounds)
        online = Node.objects.filter(
            name__in=[*(c.name for c in stack.nodes), *node_names(SIM_PREFIX, g.fleet_nodes)],
            last_heartbeat__gte=online_cutoff(),
        ).count()

        print(f"(g) fleet: sweeps and the dashboard with {g.live_nodes + g.fleet_nodes:,} nodes ...", flush=True)
        fleet = Fleet(
            live=g.live_nodes, sim=g.fleet_nodes, added=added, startup_s=startup, interval_s=interval,
            window_s=g.fleet_seconds, idle_cpu=idle, beating_cpu=beating,
            beat_rate=rate, behind_s=behind,
            rss_mb=rss, backlog=backlog, drain_s=0.0, online=online,
        )  # fmt: skip
        fleet.sweeps["dead-node sweep"] = _timed(g.sweeps, sweep_dead_nodes)
        fleet.sweeps["stalled-run sweep"] = _timed(g.sweeps, sweep_stalled_runs)
        try:
            fleet.dashboard = {k: _timed(g.sweeps, call) for k, call in _dashboard_calls().items()}
        finally:
            get_user_model().objects.filter(username=_STAFF).delete()
    finally:
        gp.stop_many([beater])
    started = time.perf_counter()
    left = _drain(g.max_s)
    if left:
        raise RuntimeError(f"the writer still had {left:,} stream entries {g.max_s} s after the heartbeats stopped")
    fleet.drain_s = time.perf_counter() - started

    # Every simulated node falls silent at once (its alive key gone, its last heartbeat an hour old):
    # the sweep that takes them all offline.
    names = node_names(SIM_PREFIX, g.fleet_nodes)
    stack.redis.delete(*[keys.alive_key(x) for x in names])
    Node.objects.filter(name__in=names).update(last_heartbeat=datetime.now(UTC) - timedelta(hours=1))
    health_log = logging.getLogger("tasks_app.fleet.health")
    level = health_log.level
    health_log.setLevel(logging.ERROR)  # not a warning line per node on the bench's output
    try:
        fleet.mass_offline = _timed(1, sweep_dead_nodes)
    finally:
        health_log.setLevel(level)
    _remove_sim(stack, g.fleet_nodes)
    return fleet


def remove(stack: Stack) -> None:
    """Clean-up after a failed run as well: the simulated nodes' rows and keys, once the writer has applied
    what the stream still holds (it updates those rows, in other orders than one bulk DELETE would)."""
    _drain(60)
    _remove_sim(stack, stack.growth.fleet_nodes)
