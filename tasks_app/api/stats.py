"""GET /api/v1/stats/: queue wait, run time and end-to-end percentiles per task type and node over a
window (tasks_app/ops/latency.py computes them; README "Operating it"), each row judged against its type's
objective, if TASKHUB_LATENCY_OBJECTIVES sets one (tasks_app/ops/objectives.py)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from tasks_app.api.filters import reject_unknown_parameters
from tasks_app.ops import objectives
from tasks_app.ops.latency import DEFAULT_WINDOW, MAX_RUNS, MAX_WINDOW, PERCENTILE_METHOD, Row, latency_stats

# RFC 3339, what the schema's `format: date-time` means: a date, a time and an offset (Z or +hh:mm).
# Python's own parser takes more (no offset, a space, week dates); a time without a zone is ambiguous.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_PARAMETERS = {"since", "until", "task_type", "node"}


class LatencyMetricSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(help_text="runs that had this step")
    p50 = serializers.FloatField(allow_null=True, help_text="seconds; null when no run had this step")
    p95 = serializers.FloatField(allow_null=True, help_text="seconds; null when no run had this step")
    p99 = serializers.FloatField(allow_null=True, help_text="seconds; null when no run had this step")


class LatencyObjectiveSerializer(serializers.Serializer[Any]):
    measure = serializers.ChoiceField(choices=objectives.MEASURES)
    percentile = serializers.ChoiceField(choices=objectives.PERCENTILES)
    seconds = serializers.FloatField(help_text="the objective: this percentile of this measure is at most this")
    value = serializers.FloatField(allow_null=True, help_text="this row's percentile (s); null: no run had the step")
    met = serializers.BooleanField(allow_null=True, help_text="value <= seconds; null when value is null")


class LatencyRowSerializer(serializers.Serializer[Any]):
    task_type = serializers.CharField()
    node = serializers.CharField()
    runs = serializers.IntegerField(help_text="runs of this type on this node that finished in the window")
    queue_wait = LatencyMetricSerializer(help_text="run start -> received (in_progress if never received)")
    run_time = LatencyMetricSerializer(help_text="in_progress -> final status")
    end_to_end = LatencyMetricSerializer(help_text="run start -> final status")
    objective = LatencyObjectiveSerializer(
        allow_null=True, help_text="its type's objective (TASKHUB_LATENCY_OBJECTIVES) judged on this row; null: none"
    )


class LatencyStatsSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    sampled = serializers.BooleanField(help_text=f"more than {MAX_RUNS} runs finished: the most recent were used")
    percentile_method = serializers.ChoiceField(choices=[PERCENTILE_METHOD])
    rows = LatencyRowSerializer(many=True)


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    why = "must be an RFC 3339 date-time with an offset, such as 2026-01-31T12:00:00Z"
    if not _RFC3339.fullmatch(raw):
        raise ValidationError({name: [why]})
    try:
        return datetime.fromisoformat(raw.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationError({name: [why]}) from exc


def _window(request: Request) -> tuple[datetime, datetime]:
    since, until = _time(request, "since"), _time(request, "until")
    if until is None:
        until = timezone.now()
    if since is None:
        try:
            since = until - DEFAULT_WINDOW
        except OverflowError as exc:  # an until within the default window of year 1
            raise ValidationError({"until": ["is too early: give since too"]}) from exc
    if since >= until:
        raise ValidationError({"since": ["must be before until"]})
    if until - since > MAX_WINDOW:
        raise ValidationError({"since": [f"the window (since to until) may be at most {MAX_WINDOW.days} days"]})
    return since, until


def _judged(row: Row) -> dict[str, Any] | None:
    judgement = objectives.judge(row, settings.TASKHUB_LATENCY_OBJECTIVES)
    if judgement is None:
        return None
    return {**asdict(judgement.objective), "value": judgement.value, "met": judgement.met}


_DATE_TIME = {"type": "string", "format": "date-time"}


class StatsView(APIView):
    """Latency percentiles per task type and node, from the task history (README "Operating it").
    Read by any account that reads /api/v1 (OperatorOrReadOnly, the default)."""

    @extend_schema(
        operation_id="v1_stats_retrieve",
        parameters=[
            OpenApiParameter(
                "since",
                _DATE_TIME,
                description=f"window start, RFC 3339 (default: until - {int(DEFAULT_WINDOW.total_seconds())} s)",
            ),
            OpenApiParameter(
                "until",
                _DATE_TIME,
                description=f"window end, exclusive (default: now); at most {MAX_WINDOW.days} days after since",
            ),
            OpenApiParameter("task_type", str, description="only this task type"),
            OpenApiParameter("node", str, description="only tasks on this node"),
        ],
        responses=LatencyStatsSerializer,
    )
    def get(self, request: Request) -> Response:
        reject_unknown_parameters(request, {*_PARAMETERS, api_settings.URL_FORMAT_OVERRIDE or "format"})
        since, until = _window(request)
        stats = latency_stats(
            since=since,
            until=until,
            task_type=request.query_params.get("task_type") or None,
            node=request.query_params.get("node") or None,
        )
        body = {
            "since": stats.since,
            "until": stats.until,
            "sampled": stats.sampled,
            "percentile_method": PERCENTILE_METHOD,
            "rows": [{**asdict(row), "objective": _judged(row)} for row in stats.rows],
        }
        return Response(LatencyStatsSerializer(body).data)
