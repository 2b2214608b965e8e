"""GET /api/v1/events/: task events as Server-Sent Events (README "Event stream").

Each event is one history row (tasks_app/tasks/events.py): `id:` is the row's id, `event: task`, `data:`
one JSON object. A client that reconnects with Last-Event-ID (EventSource does it by itself), or asks
with ?after=, first gets every event it missed from the history table, then the live tail
(tasks_app/api/event_hub.py): nothing lost, nothing twice, in id order (and so in order per task).

Who sees what: the list's rule. Operators and other accounts see every task's events; a node account
sees only the events of tasks on its own node.

Serving: a stream holds one gunicorn thread while it is open. At most TASKHUB_EVENT_STREAMS per process
(beyond it a 429 with Retry-After), on threads of their own (gunicorn.conf.py), so streams never take the
threads that serve the rest of the API. The stream holds no database connection once it has caught up.
It ends after ?timeout= or TASKHUB_EVENTS_MAX_SECONDS (`event: end`), or when its client reads too slowly
(`event: cutoff`); the client resumes with Last-Event-ID in both cases.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Generator, Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from tasks_app.api import slots
from tasks_app.api.event_hub import HUB, Subscription
from tasks_app.api.filters import reject_unknown_parameters
from tasks_app.api.permissions import node_of
from tasks_app.fleet.selectors import unknown_clusters
from tasks_app.tasks.events import Event, EventFilter, events_after
from workers.protocol.status import STATUS_VALUES

KEEPALIVE_SECONDS = 5.0  # a comment line this often: proxies keep the connection, and a gone client is
# noticed (its slot freed) within this time
RECONNECT_MS = 1000  # EventSource's wait before it reconnects (`retry:`)
CATCH_UP_PAGE = 500  # history rows per query while a stream catches up
SEND_AT_ONCE = 200  # queued events written in one chunk
_PARAMETERS = {"task_id", "task_type", "task_status", "node", "cluster", "after", "timeout"}
_NAME_MAX = 64


class EventStreamRenderer(BaseRenderer):
    """text/event-stream: the one representation of the stream (for content negotiation and the schema).
    The view writes the stream itself, and its errors are rendered as JSON (finalize_response)."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"


class StreamsBusy(Throttled):
    def __init__(self, limit: int) -> None:
        super().__init__(
            wait=2,
            detail=f"All {limit} event streams of this server process are open (TASKHUB_EVENT_STREAMS); retry after "
            "Retry-After seconds",
        )


def _names(request: Request, name: str, most: int = 1000) -> frozenset[str]:
    """A repeatable parameter (?task_type=a&task_type=b): names may hold commas, so no comma lists."""
    values = frozenset(v for v in request.query_params.getlist(name) if v != "")
    if len(values) > most:
        raise ValidationError({name: [f"at most {most} values"]})
    bad = sorted(v for v in values if len(v) > _NAME_MAX or not v.isprintable())
    if bad:
        raise ValidationError({name: [f"{bad[0]!r} is not a name (printable, at most {_NAME_MAX} characters)"]})
    return values


def _number(request: Request, name: str, *, high: float) -> float | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValidationError({name: ["must be a number"]}) from exc
    if not 0 <= value <= high:
        raise ValidationError({name: [f"must be between 0 and {high:g}"]})
    return value


def _after(request: Request) -> int | None:
    """Where the stream starts: after the Last-Event-ID a reconnecting EventSource sends, else ?after=, else
    now (live events only)."""
    header = request.headers.get("Last-Event-ID", "").strip()
    raw, name = (header, "Last-Event-ID") if header else (request.query_params.get("after", ""), "after")
    if raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ValidationError({name: ["must be an event id (a whole number, as the stream's `id:` lines give)"]})
    return int(raw)


def event_filter(request: Request) -> EventFilter:
    # DRF's `format` too, which the OpenAPI document lists for every operation, as /api/v1/stats/ takes it.
    reject_unknown_parameters(request, {*_PARAMETERS, api_settings.URL_FORMAT_OVERRIDE or "format"})
    statuses = _names(request, "task_status")
    bad = sorted(statuses - set(STATUS_VALUES))
    if bad:
        raise ValidationError({"task_status": [f"{bad[0]!r} is not a status; one of: {', '.join(STATUS_VALUES)}"]})
    clusters = _names(request, "cluster")
    missing = unknown_clusters(sorted(clusters))
    if missing:
        raise ValidationError({"cluster": [f"no cluster is named {missing[0]!r}"]})
    node = node_of(request.user)
    return EventFilter(
        task_ids=_names(request, "task_id", most=100),
        task_types=_names(request, "task_type"), statuses=statuses, nodes=_names(request, "node"),
        clusters=clusters, own_node=node.name if node is not None else None,
    )  # fmt: skip


def _frame(event: Event) -> str:
    return f"id: {event.id}\nevent: task\ndata: {json.dumps(event.as_json(), separators=(',', ':'))}\n\n"


def _control(kind: str, last: int | None, why: str) -> str:
    body = json.dumps({"last_event_id": last, "reason": why}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n"


class _Stream:
    """The response's body. Django calls close() when the response ends, however it ends (the client gone,
    the server stopping), and that gives the slot and the subscription back even if the body was never
    read (a generator's `finally` would not run then)."""

    def __init__(self, sub: Subscription, after: int | None, seconds: float, slots_limit: int) -> None:
        self._sub = sub
        self._slots_limit = slots_limit
        self._closed = False
        self._body = self._events(after, seconds)

    def __iter__(self) -> Iterator[str]:
        return self._body

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._body.close()
        HUB.unsubscribe(self._sub)
        slots.give("events", self._slots_limit)

    def _events(self, after: int | None, seconds: float) -> Generator[str, None, None]:
        sub = self._sub
        deadline = time.monotonic() + seconds
        last = after if after is not None else sub.frontier
        yield f"retry: {RECONNECT_MS}\n: stream of task events; resumes after id {last}\n\n"
        # Catch-up: what the client missed, from the table, up to where the live tail starts.
        while last < sub.frontier and time.monotonic() < deadline:
            clusters = HUB.clusters()
            page = events_after(after=last, upto=sub.frontier, limit=CATCH_UP_PAGE, filt=sub.filt, clusters=clusters)
            if page:
                yield "".join(_frame(e) for e in page)
                last = page[-1].id
            if len(page) < CATCH_UP_PAGE:
                last = max(last, sub.frontier)
                break
        if last < sub.frontier:  # the time ran out while catching up: the client resumes from here
            yield _control("end", last, "the stream's time is up; reconnect with Last-Event-ID")
            return
        # What follows is live: a client that replayed a task's history knows its current state now.
        yield _control("live", last, "caught up; what follows happens now")
        # The live tail needs no database: give this thread's connection back while it waits.
        connection.close()
        while True:
            if sub.overflowed:
                yield _control("cutoff", last, "this client read too slowly; reconnect with Last-Event-ID")
                return
            left = deadline - time.monotonic()
            if left <= 0:
                yield _control("end", last, "the stream's time is up; reconnect with Last-Event-ID")
                return
            try:
                event = sub.events.get(timeout=min(KEEPALIVE_SECONDS, left))
            except queue.Empty:  # nothing happened: a comment keeps the connection, and finds a gone client
                yield ": keepalive\n\n"
                continue
            batch = [event]
            while len(batch) < SEND_AT_ONCE and not sub.events.empty():
                batch.append(sub.events.get_nowait())
            fresh = [e for e in batch if e.id > last]
            if fresh:
                yield "".join(_frame(e) for e in fresh)
                last = fresh[-1].id


# One Server-Sent Event, as OpenAPI tools read a text/event-stream: its fields, `data` the JSON text.
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["task", "live", "end", "cutoff"]},
        "data": {"type": "string", "description": "one JSON object"},
        "id": {"type": "string", "pattern": r"^[0-9]+$", "description": "the history row id (task events)"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["event", "data"],
}
# What _names takes: printable names (empty ones are left out), as many as `most`.
_NAME_ITEM = {"type": "string", "maxLength": _NAME_MAX, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"}
_ANY_NAMES = {"type": "array", "items": _NAME_ITEM, "maxItems": 1000}
_TASK_IDS = {"type": "array", "items": _NAME_ITEM, "maxItems": 100}
_STATUSES = {"type": "array", "items": {"type": "string", "enum": ["", *STATUS_VALUES]}, "maxItems": 1000}


class EventStreamView(APIView):
    """Task events as Server-Sent Events. Any account that reads /api/v1; a node account gets its own tasks'."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [EventStreamRenderer, JSONRenderer]
    may_be_busy = True  # a 429 when every stream of the process is open (documented by TaskhubAutoSchema)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        # One representation, whatever Accept or ?format= say: the stream (its errors are JSON, below).
        return EventStreamRenderer(), EventStreamRenderer.media_type

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # An error is a JSON body, whatever the client accepts: EventSource and `taskhub events` read the
        # reason from it (application/json, not text/event-stream).
        if not isinstance(response, StreamingHttpResponse):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="v1_events_stream",
        request=None,
        parameters=[
            OpenApiParameter(
                "task_id", _TASK_IDS, description="only these tasks (repeat the parameter for more, at most 100)"
            ),
            OpenApiParameter(
                "task_type", _ANY_NAMES, description="only these task types (repeat the parameter for more)"
            ),
            OpenApiParameter(
                "task_status", _STATUSES, description="only events to these statuses (repeat the parameter for more)"
            ),
            OpenApiParameter(
                "node", _ANY_NAMES, description="only tasks on these nodes (repeat the parameter for more)"
            ),
            OpenApiParameter(
                "cluster",
                _ANY_NAMES,
                description="only tasks on nodes of these clusters (repeat the parameter for more)",
            ),
            OpenApiParameter(
                "after",
                {"type": "string", "pattern": r"^[0-9]{1,18}$"},
                description="start after this event id (the Last-Event-ID header, when sent, wins); default: "
                "only events from now on",
            ),
            OpenApiParameter(
                "timeout",
                {"type": "number", "minimum": 0, "maximum": 86400},
                description="end the stream after this many seconds (at most TASKHUB_EVENTS_MAX_SECONDS)",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                {"type": "string", "pattern": r"^[0-9]{0,18}$"},
                location=OpenApiParameter.HEADER,
                description="resume after this event id (what a reconnecting EventSource sends); empty: as if not sent",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                _EVENT_SCHEMA,
                description="`id: <history id>`, `event: task`, `data: {id, task_id, task_type, node, cluster, kind "
                "(created|status|progress), from_status, to_status, at, source, run_id[, progress]}`; "
                "`event: live` once what was missed has been sent; `event: end` or `event: cutoff` before the "
                "stream ends (each with data {last_event_id, reason})",
            ),
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        filt = event_filter(request)
        after = _after(request)
        limit = float(settings.TASKHUB_EVENTS_MAX_SECONDS)
        asked = _number(request, "timeout", high=86400)
        seconds = limit if asked is None else min(asked, limit)
        limit = max(1, int(settings.TASKHUB_EVENT_STREAMS))
        if not slots.take("events", limit):
            raise StreamsBusy(limit)
        try:
            # The subscription may wait for the tail's first frontier, which needs a connection of its own
            # from the same pool: give this one back first (a catch-up takes one again).
            connection.close()
            sub = HUB.subscribe(filt, timeout=float(settings.TASKHUB_EVENTS_GAP_SECONDS))
        except BaseException:
            slots.give("events", limit)
            raise
        # A client that stops reading would block the thread in a write forever (the stream's own time limit
        # and cut-off are checked between writes): under gunicorn, a write that cannot go on for this long
        # fails, the connection is closed, and the stream's slot is given back.
        sock = request.META.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(float(settings.TASKHUB_EVENTS_SEND_TIMEOUT_SECONDS))
        response = StreamingHttpResponse(
            _Stream(sub, after, seconds, limit), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response
