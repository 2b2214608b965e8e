"""`taskhub events`: follow the task event stream (GET /api/v1/events/), and the reconnecting reader that
`taskhub task watch` uses too.

The stream ends now and then (the server's time limit, a client too slow, a restart); the reader resumes
with Last-Event-ID, so no event is lost or shown twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich.text import Text

from cli import render
from cli.client import Api
from cli.common import JsonOption, UrlOption, open_api
from cli.errors import ApiError, Unreachable

# A 429 (every stream of that server process taken) without Retry-After: try again after this.
BUSY_RETRY_SECONDS = 2.0
# A dropped connection: try again after this, and give up after this many failures in a row.
RECONNECT_SECONDS = 1.0
RECONNECTS = 5
# What one stream asks for at most: the server ends it sooner if TASKHUB_EVENTS_MAX_SECONDS says so.
STREAM_SECONDS = 3600.0


def follow_events(
    api: Api,
    params: dict[str, list[str]],
    *,
    after: str | None = None,
    deadline: float | None = None,
    on_live: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each task event the filters take, in order, until `deadline` (time.monotonic()) if one is given.
    Resumes after every end of the stream with the last id seen. `on_live()` is called each time a stream
    has sent what was missed (`event: live`): what follows happens now."""
    last = after
    failures = 0
    while deadline is None or time.monotonic() < deadline:
        left = STREAM_SECONDS if deadline is None else max(deadline - time.monotonic(), 0.0)
        query: dict[str, str | list[str]] = {**params, "timeout": f"{min(left, STREAM_SECONDS):.1f}"}
        try:
            with api.events(query, last_id=last) as stream:
                ended = False
                for event in stream:
                    failures = 0
                    if event.event == "task":
                        last = event.id
                        yield json.loads(event.data)
                        continue
                    body = json.loads(event.data)
                    if last is None and body.get("last_event_id") is not None:
                        last = str(body["last_event_id"])  # from here on, a reconnect resumes where this left
                    if event.event == "live" and on_live is not None:
                        on_live()
                    elif event.event in ("end", "cutoff"):
                        ended = True
                        break
            if not ended:  # closed without saying why (a proxy, a restart): count it, and wait a little
                raise httpx.RemoteProtocolError("the event stream closed without an end event")
        except ApiError as exc:
            if exc.status_code == 503:  # the database is down for now: as a dropped connection
                failures += 1
                if failures > RECONNECTS:
                    raise
            elif exc.status_code != 429:
                raise
            time.sleep(exc.retry_after if exc.retry_after is not None else BUSY_RETRY_SECONDS)
        except (httpx.TransportError, Unreachable) as exc:
            failures += 1
            if failures > RECONNECTS:
                raise Unreachable(f"the event stream of {api.base_url} keeps dropping: {exc}") from exc
            time.sleep(RECONNECT_SECONDS)


def event_line(event: dict[str, Any]) -> Text:
    at = str(event.get("at", ""))
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        when = at
    kind = str(event.get("kind"))
    if kind == "progress":
        progress = event.get("progress") or {}
        what = Text(f"progress {progress.get('percent', '?')}% {progress.get('message') or ''}".rstrip())
    elif kind == "created":
        what = Text.assemble("created ", render.status_text(str(event.get("to_status"))))
    else:
        what = Text.assemble(
            render.status_text(str(event.get("from_status"))), " -> ", render.status_text(str(event.get("to_status")))
        )
    node = f"  on {event['node']}" if event.get("node") else ""
    return Text.assemble(
        (when, "dim"), "  ", (f"#{event.get('id')}", "dim"), "  ", str(event.get("task_id")), "  ",
        (str(event.get("task_type")), "cyan"), "  ", what, (node, "dim"),
    )  # fmt: skip


def events(
    ctx: typer.Context,
    task_type: Annotated[list[str] | None, typer.Option("--type", help="Only this task type (repeatable).")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only changes to this status (repeatable).")] = (
        None
    ),
    node: Annotated[list[str] | None, typer.Option("--node", help="Only tasks on this node (repeatable).")] = None,
    cluster: Annotated[list[str] | None, typer.Option("--cluster", help="Only this cluster's tasks (repeatable).")] = (
        None
    ),
    task_id: Annotated[list[str] | None, typer.Option("--task", help="Only this task (repeatable).")] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Start after this event id (replays what came since).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--for", min=0.0, help="Stop after this many seconds. [default: until Ctrl-C]")
    ] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after this many events.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow task events as they happen: creations, status changes and progress. One line each, or one
    JSON object per line with --json."""
    params = {
        k: v
        for k, v in {
            "task_type": task_type, "task_status": status, "node": node, "cluster": cluster, "task_id": task_id,
        }.items()
        if v
    }  # fmt: skip
    if after is not None and not after.isdigit():
        raise typer.BadParameter("must be an event id (a whole number)", param_hint="--after")
    deadline = None if seconds is None else time.monotonic() + seconds
    out = render.console()
    shown = 0
    with open_api(ctx, url) as api:
        try:
            for event in follow_events(api, params, after=after, deadline=deadline):
                if as_json:
                    typer.echo(json.dumps(event, separators=(",", ":")))
                else:
                    out.print(event_line(event))
                shown += 1
                if count is not None and shown >= count:
                    return
        except KeyboardInterrupt:
            return
