"""The operator's dashboard at /admin/dashboard/: staff only (wrapped in admin.site.admin_view in
taskhub/urls.py), linked from the admin index (templates/admin/index.html). Reads are in
tasks_app.dashboard_selectors; the chart is drawn by tasks_app.dashboard_chart. With JavaScript the page
follows the event stream (GET /api/v1/events/) and refetches its live sections (?fragment=live) in place:
static/taskhub/dashboard.js."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from tasks_app.ops import dashboard_selectors as sel
from tasks_app.ops import objectives
from tasks_app.ops.dashboard_chart import COLORS, throughput_svg
from tasks_app.ops.latency import Row, latency_stats
from workers.protocol.status import STATUS_VALUES

FAILURE_WINDOW = timedelta(hours=1)
THROUGHPUT_MINUTES = 60
LIVE_FRAGMENT = "taskhub/_dashboard_live.html"
LATENCY_WINDOW = timedelta(hours=1)
# The page reads at most this many runs (the most recent to finish) for its latency section, not
# /api/v1/stats/' 100,000: it is loaded often. The section says when it sampled.
LATENCY_MAX_RUNS = 20_000


@dataclass(frozen=True)
class LatencyCell:
    seconds: float | None
    judged: bool  # the percentile the row's objective is about


@dataclass(frozen=True)
class LatencyLine:
    """A row of the "Latency (last hour)" table: a type on a node, its nine percentiles in column order,
    and its objective judged (None: its type has none)."""

    row: Row
    cells: list[LatencyCell]
    judgement: objectives.Judgement | None

    @property
    def missed(self) -> bool:
        return self.judgement is not None and self.judgement.met is False


def latency_section(now: datetime) -> dict[str, object]:
    stats = latency_stats(since=now - LATENCY_WINDOW, until=now, max_runs=LATENCY_MAX_RUNS)
    wanted = settings.TASKHUB_LATENCY_OBJECTIVES
    lines = []
    for row in stats.rows:
        judgement = objectives.judge(row, wanted)
        target = (judgement.objective.measure, judgement.objective.percentile) if judgement else None
        cells = [
            LatencyCell(getattr(getattr(row, measure), f"p{p}"), (measure, p) == target)
            for measure in objectives.MEASURES
            for p in objectives.PERCENTILES
        ]
        lines.append(LatencyLine(row=row, cells=cells, judgement=judgement))
    return {
        "lines": lines,
        "sampled": stats.sampled,
        "max_runs": LATENCY_MAX_RUNS,
        "objectives": sorted(wanted.items()),
        "missed": sum(1 for line in lines if line.missed),
        "columns": [f"p{p}" for _ in objectives.MEASURES for p in objectives.PERCENTILES],
    }


def dashboard(request: HttpRequest) -> TemplateResponse:
    now = timezone.now()
    counts = sel.task_counts()
    failures_by_type, failures_by_node = sel.failures_since(now - FAILURE_WINDOW)
    nodes = sel.nodes()
    minutes = sel.throughput(THROUGHPUT_MINUTES, now)
    context = {
        **admin.site.each_context(request),
        "title": "Operator's dashboard",
        "now": now,
        "statuses": STATUS_VALUES,
        "counts": counts,
        "status_rows": [(s, counts.by_status[s]) for s in STATUS_VALUES],
        "failures_by_type": failures_by_type,
        "failures_by_node": failures_by_node,
        "failures_total": sum(n for _, n in failures_by_type),
        "nodes": nodes,
        "nodes_online": sum(1 for n in nodes if n.online),
        "stream": sel.stream_state(),
        "chart": throughput_svg(minutes),
        "finished_last_hour": sum(m.total for m in minutes),
        "colors": COLORS,
    }
    # ?fragment=live: the live sections alone (what dashboard.js fetches when the event stream reports a
    # change), from the same context, so a live refresh shows exactly what a reload would.
    template = LIVE_FRAGMENT if request.GET.get("fragment") == "live" else "taskhub/dashboard.html"
    if template != LIVE_FRAGMENT:  # the latency section is not a live one: its query is not paid per event
        context["latency"] = latency_section(now)
    return TemplateResponse(request, template, context)
