"""--watch: follow a task until it is completed, failed or cancelled."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from cli import render
from cli.client import Api, seg
from cli.errors import EXIT_FAILED, EXIT_OK, ApiError, WatchTimeout
from cli.events import follow_events

TERMINAL = frozenset({"completed", "failed", "cancelled"})
# Long poll: the server answers as soon as the task changes, or after this many seconds.
LONG_POLL_SECONDS = 10.0
# A 429 to a long poll (every slot of that server process taken) without a Retry-After: poll again after this.
BUSY_RETRY_SECONDS = 2.0
# What a server without GET /api/v1/events/ answers it with: watch with long polls there.
STREAMLESS = frozenset({404, 405, 406})


def task_path(task_id: str) -> str:
    return f"/api/v1/tasks/{seg(task_id)}/"


class _Ended(Exception):
    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task.get("task_id"))
        self.task = task


def follow(api: Api, task: dict[str, Any], *, timeout: float, show: bool) -> dict[str, Any]:
    """Follow the task until it ends, on the event stream (GET /api/v1/events/?task_id=); when `show`,
    print each status it reaches and draw a progress bar from the progress its handler reports. A server
    without the stream is followed with long polls instead. Raises WatchTimeout (exit 2) when it has not
    ended within `timeout` seconds."""
    try:
        return _follow_stream(api, task, timeout=timeout, show=show)
    except ApiError as exc:
        if exc.status_code not in STREAMLESS:
            raise
    return follow_polling(api, task, timeout=timeout, show=show)


class _Display:
    """What a watcher shows: a line for each status the task reaches, and a progress bar drawn from the
    progress its handler reports (while the task is not final)."""

    def __init__(self, task_id: str, bar: Progress, *, show: bool) -> None:
        self.task_id, self.bar, self.show = task_id, bar, show
        self.bar_id = bar.add_task("", total=100, visible=False)
        self.last: str | None = None

    def reached(self, status: str) -> None:
        if status != self.last:
            self.last = status
            if self.show:
                self.bar.console.print(_line(self.task_id, status))

    def progress(self, progress: Any) -> None:
        if isinstance(progress, dict) and self.last not in TERMINAL:
            message = str(progress.get("message") or self.last)
            percent = float(progress.get("percent") or 0)
            self.bar.update(self.bar_id, completed=percent, description=message, visible=True)


def _follow_stream(api: Api, task: dict[str, Any], *, timeout: float, show: bool) -> dict[str, Any]:
    """The task's whole history from the table (Last-Event-ID 0, this task only), then its live events: what
    it shows is the order things happened in. A final status counts once the stream is live (a retried
    task's earlier failure is history)."""
    task_id = str(task["task_id"])
    live = False
    deadline = time.monotonic() + timeout
    with _progress(show) as bar:
        shown = _Display(task_id, bar, show=show)

        def on_live() -> None:
            nonlocal live
            live = True
            if shown.last in TERMINAL:
                raise _Ended(dict(api.get(task_path(task_id))))

        try:
            for event in follow_events(api, {"task_id": [task_id]}, after="0", deadline=deadline, on_live=on_live):
                shown.reached(str(event.get("to_status")))
                shown.progress(event.get("progress"))
                if live and shown.last in TERMINAL:
                    return dict(api.get(task_path(task_id)))
        except _Ended as ended:
            return ended.task
    still = shown.last or task.get("task_status")
    raise WatchTimeout(f"timed out after {timeout:g}s waiting for task {task_id} (still {still})")


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        console=render.console(), transient=True, disable=not show,
    )  # fmt: skip


def follow_polling(api: Api, task: dict[str, Any], *, timeout: float, show: bool) -> dict[str, Any]:
    """Follow the task with long polls (GET ...?wait=), for a server without the event stream.

    A 429 (the server's long-poll slots are all taken) is not an error here: it sleeps Retry-After and polls
    again. Raises WatchTimeout (exit 2) when it has not ended within `timeout` seconds.
    """
    task_id = str(task["task_id"])
    deadline = time.monotonic() + timeout
    with _progress(show) as bar:
        shown = _Display(task_id, bar, show=show)
        shown.reached(str(task.get("task_status")))
        while shown.last not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WatchTimeout(f"timed out after {timeout:g}s waiting for task {task_id} (still {shown.last})")
            wait = f"{min(LONG_POLL_SECONDS, max(left, 0.1)):.1f}"
            try:
                task = api.get(task_path(task_id), params={"wait": wait})
            except ApiError as exc:
                if exc.status_code != 429:
                    raise
                # The server is busy with other long polls, not refusing us: wait as told, then ask again.
                pause = exc.retry_after if exc.retry_after is not None else BUSY_RETRY_SECONDS
                time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                continue
            shown.reached(str(task.get("task_status")))
            shown.progress((task.get("task_status_data") or {}).get("progress"))
    return task


def _line(task_id: str, status: str) -> Text:
    return Text.assemble((datetime.now().strftime("%H:%M:%S"), "dim"), "  ", task_id, "  ", render.status_text(status))


def watch_and_exit(api: Api, task: dict[str, Any], *, timeout: float, as_json: bool) -> None:
    """Follow the task, show how it ended, and exit: 0 if it completed, 1 if it failed or was cancelled."""
    final = follow(api, task, timeout=timeout, show=not as_json)
    if as_json:
        render.print_json(final)
    else:
        show_outcome(final)
    raise typer.Exit(EXIT_OK if final.get("task_status") == "completed" else EXIT_FAILED)


def show_outcome(task: dict[str, Any]) -> None:
    out = render.console()
    status = str(task.get("task_status"))
    out.print(Text.assemble(f"Task {task.get('task_id')} ", render.status_text(status)))
    data = task.get("task_status_data")
    error = render.task_error(data)
    if error is not None:
        out.print(error)
    nodes = render.nodes_table(data)
    if nodes is not None:
        out.print(nodes)
