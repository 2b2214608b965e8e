"""The operator's dashboard at /admin/dashboard/: staff only (wrapped in admin.site.admin_view in
taskhub/urls.py), linked from the admin index (templates/admin/index.html). Reads are in
tasks_app.dashboard_selectors; the chart is drawn by tasks_app.dashboard_chart."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from tasks_app.ops import dashboard_selectors as sel
from tasks_app.ops.dashboard_chart import COLORS, throughput_svg
from workers.protocol.status import STATUS_VALUES

FAILURE_WINDOW = timedelta(hours=1)
THROUGHPUT_MINUTES = 60


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
    return TemplateResponse(request, "taskhub/dashboard.html", context)
