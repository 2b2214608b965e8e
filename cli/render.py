"""Output: rich tables for people, plain JSON for scripts.

Every value from the API goes into a rich Text, never through markup, so a message such as
"storage_units[0].node: ..." prints as it is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.json import JSON
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 200  # output that is not a terminal is not wrapped to 80 columns (grep, less, logs)

STATUS_STYLES = {
    "pending": "yellow",
    "received": "cyan",
    "in_progress": "blue",
    "cancelling": "magenta",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}


def console(*, stderr: bool = False) -> Console:
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def print_json(data: Any) -> None:
    """The API's JSON, as is: for scripts, so no colours, no wrapping."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def text(value: Any, style: str = "") -> Text:
    if value is None or value == "":
        return Text("-", style="dim")
    return Text(str(value), style=style)


def status_text(status: Any) -> Text:
    return text(status, STATUS_STYLES.get(str(status), ""))


def epoch_time(ts: Any) -> str:
    """Epoch seconds as local time, e.g. 2025-09-20 14:03:11."""
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(value: Any) -> str:
    """An ISO 8601 timestamp from the API as local time."""
    if not isinstance(value, str) or not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def iso_epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def ago(ts: Any, now: float | None = None) -> str:
    """How long ago epoch second `ts` was: 5s ago, 3m ago, 2h ago, 4d ago."""
    if not isinstance(ts, int | float):
        return "-"
    delta = int((time.time() if now is None else now) - ts)
    if delta < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"


def compact(value: Any, width: int = 80) -> str:
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return raw if len(raw) <= width else raw[: width - 3] + "..."


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for name in columns:
        grid.add_column(name, overflow="fold")
    return grid


def footer(count: int, noun: str, *, more: bool = False, hint: str = "") -> Text:
    words = f"{count} {noun}{'' if count == 1 else 's'}"
    if more:
        words += f" (limit reached; there may be more{': ' + hint if hint else ''})"
    return Text(words, style="dim")


# --- tasks -------------------------------------------------------------------------------------------


def tasks_table(tasks: Iterable[Mapping[str, Any]]) -> Table:
    grid = table("ID", "TYPE", "STATUS", "NODE", "CREATED", "UPDATED")
    for t in tasks:
        grid.add_row(
            text(t.get("task_id")),
            text(t.get("task_type")),
            status_text(t.get("task_status")),
            text(t.get("node")),
            text(epoch_time(t.get("task_create_timestamp"))),
            text(ago(t.get("task_update_timestamp"))),
        )
    return grid


def bulk_table(results: Iterable[Mapping[str, Any]]) -> Table:
    """POST /api/v1/tasks/bulk/'s answer: one row per item, in the order sent."""
    grid = table("#", "ID", "RESULT", "ERRORS")
    for r in results:
        errors = r.get("errors")
        if errors:
            result = Text("failed", style="bold red")
        elif r.get("created"):
            result = Text("created", style="green")
        else:
            result = Text("exists (same body)", style="yellow")
        problems = "; ".join(f"{field}: {' '.join(map(str, msgs))}" for field, msgs in (errors or {}).items())
        grid.add_row(text(r.get("index")), text(r.get("task_id")), result, text(problems))
    return grid


def task_fields(task: Mapping[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    created, updated = task.get("task_create_timestamp"), task.get("task_update_timestamp")
    rows = [
        ("ID", text(task.get("task_id"))),
        ("Type", text(task.get("task_type"))),
        ("Status", status_text(task.get("task_status"))),
        ("Node", text(task.get("node"))),
        ("Created", text(f"{epoch_time(created)} ({ago(created)})")),
        ("Updated", text(f"{epoch_time(updated)} ({ago(updated)})")),
        ("Attempts", text(task.get("attempts"))),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def pretty_json(value: Any) -> JSON:
    return JSON(json.dumps(value, ensure_ascii=False), indent=2, highlight=False)


def task_error(status_data: Any) -> Text | None:
    """The task's own error line, from task_status_data.error (workers/node/reporter.py's error_data)."""
    error = status_data.get("error") if isinstance(status_data, dict) else None
    if not error:
        return None
    if not isinstance(error, dict):
        return Text(f"Error: {error}", style="red")
    line = f"Error: {error.get('type') or 'error'}: {error.get('message', '')}"
    if error.get("node"):
        line += f" (on node {error['node']})"
    return Text(line, style="red")


def nodes_table(status_data: Any) -> Table | None:
    """Per-node outcome of a fanned-out task (task_status_data.nodes), like `kadalu task list -t`."""
    nodes = status_data.get("nodes") if isinstance(status_data, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        return None
    grid = table("NODE", "RESULT", "DETAIL", title="Nodes")
    for name, outcome in nodes.items():
        if not isinstance(outcome, dict):
            grid.add_row(text(name), text("?"), text(compact(outcome)))
            continue
        if outcome.get("ok"):
            result = outcome.get("result")
            grid.add_row(text(name), text("ok", "green"), text(compact(result) if result else ""))
            continue
        error = outcome.get("error")
        if isinstance(error, dict):
            detail = f"{error.get('type') or 'error'}: {error.get('message', '')}"
        else:
            detail = str(error or "")
        grid.add_row(text(name), text("failed", "bold red"), text(detail))
    return grid


def history_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """Every change: when, from, to, which run (its id's first 8 characters; none for a tracked task), who."""
    grid = table("AT", "FROM", "TO", "RUN", "SOURCE", title="History")
    for row in rows:
        grid.add_row(
            text(iso_time(row.get("at"))),
            text(row.get("from_status") or "(created)", "dim" if not row.get("from_status") else ""),
            status_text(row.get("to_status")),
            text(str(row.get("run_id") or "")[:8], "dim"),
            text(row.get("source")),
        )
    return grid


# --- clusters, nodes, volumes ------------------------------------------------------------------------


def clusters_table(clusters: Iterable[Mapping[str, Any]]) -> Table:
    grid = table("NAME", "STATE", "NODES", "CREATED", "ID")
    for c in clusters:
        nodes = c.get("nodes") or []
        grid.add_row(
            text(c.get("name")),
            text(c.get("state")),
            text(", ".join(str(n) for n in nodes) if nodes else ""),
            text(iso_time(c.get("created_at"))),
            text(c.get("id"), "dim"),
        )
    return grid


def nodes_list_table(nodes: Iterable[Mapping[str, Any]]) -> Table:
    grid = table("NAME", "CLUSTER", "STATE", "TRANSPORT", "ONLINE", "LAST HEARTBEAT", "CAPACITY")
    for n in nodes:
        online = n.get("online")
        grid.add_row(
            text(n.get("name")),
            text(n.get("cluster")),
            text(n.get("state")),
            text(n.get("transport")),
            text("yes", "green") if online else text("no", "red"),
            text(ago(iso_epoch(n.get("last_heartbeat"))) if n.get("last_heartbeat") else "never"),
            text(n.get("capacity_blocks")),
        )
    return grid


def units_text(units: Any) -> str:
    if not isinstance(units, list):
        return ""
    parts = []
    for u in units:
        if isinstance(u, dict):
            parts.append(f"{u.get('node')}:{u['path']}" if u.get("path") else str(u.get("node")))
    return ", ".join(parts)


def volumes_table(volumes: Iterable[Mapping[str, Any]]) -> Table:
    grid = table("CLUSTER", "NAME", "TYPE", "STATE", "STORAGE UNITS", "CREATED", "TASK")
    for v in volumes:
        grid.add_row(
            text(v.get("cluster")),
            text(v.get("name")),
            text(v.get("type")),
            text(v.get("state")),
            text(units_text(v.get("storage_units"))),
            text(iso_time(v.get("created_at"))),
            text(v.get("task_id"), "dim"),
        )
    return grid
