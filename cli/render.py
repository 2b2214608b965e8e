"""Output: rich tables for people, plain JSON for scripts.

Every value from the API goes into a rich Text, never through markup, so a message such as
"storage_units[0].node: ..." prints as it is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


# --- task show: placement, runs, timings -----------------------------------------------------------------

RULE_MEANINGS = {
    "balanced": "the least loaded candidate that may take it",
    "first": "the first candidate that may take it",
    "explicit": "the node its request named",
    "order_key": "the node of the earlier tasks of its ordering key",
}
TERMINAL = ("completed", "failed", "cancelled")


def constraints_text(constraints: Any) -> str:
    if not isinstance(constraints, dict) or not constraints:
        return "none"
    parts = []
    if constraints.get("labels"):
        parts.append(f"labels {pairs_text(constraints['labels'])}")
    if constraints.get("capacity"):
        parts.append(f"needs {pairs_text(constraints['capacity'])}")
    return "; ".join(parts) or "none"


def placement_of(task: Mapping[str, Any]) -> dict[str, Any]:
    placement = task.get("placement")
    return placement if isinstance(placement, dict) else {}


def placement_fields(task: Mapping[str, Any]) -> Table:
    """Why the task runs where it does (GlobalTask.placement): the rule, the node, what bent the choice."""
    placement = placement_of(task)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rule = placement.get("rule")
    if rule:
        meaning = RULE_MEANINGS.get(str(rule))
        grid.add_row("Rule", text(f"{rule} ({meaning})" if meaning else rule))
        grid.add_row("Decided", text(epoch_time(placement.get("at"))))
    if placement.get("outcome") == "unschedulable":
        grid.add_row("Node", text("none: unschedulable (no candidate may take it)", "bold red"))
    elif rule:
        grid.add_row("Node", text(placement.get("node")))
    else:
        grid.add_row("Rule", text("none recorded (a tracked task, or placed before placement was recorded)", "dim"))
    if placement.get("order_key"):
        grid.add_row("Ordering key", text(placement["order_key"]))
    followed = placement.get("order_key_node")
    if isinstance(followed, dict):
        why = f"{followed.get('node')} (its ordering key's earlier tasks went there): {followed.get('passed_over')}"
        grid.add_row("Not its key's node", text(why))
    if placement.get("reassigned_from"):
        grid.add_row("Reassigned from", text(placement["reassigned_from"]))
    grid.add_row("Constraints", text(constraints_text(task.get("constraints"))))
    return grid


def candidates_table(task: Mapping[str, Any]) -> Table | None:
    """Each candidate node: chosen, or its load when it was eligible, or why it was passed over."""
    placement = placement_of(task)
    candidates = placement.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return None
    chosen = placement.get("node")
    grid = table("NODE", "OUTCOME", "ONLINE", "UNFINISHED", "FREE SHARE", "WHY PASSED OVER", title="Candidates")
    for c in candidates:
        if not isinstance(c, dict):
            continue
        if "passed_over" in c:
            outcome = text("passed over", "yellow")
        elif c.get("node") == chosen:
            outcome = text("chosen", "green")
        else:
            outcome = text("eligible")
        online = c.get("online")
        share = c.get("free_share")
        grid.add_row(
            text(c.get("node")),
            outcome,
            text(None if online is None else ("yes" if online else "no")),
            text(c.get("unfinished")),
            text(f"{share:.0%}" if isinstance(share, int | float) else None),
            text(c.get("passed_over")),
        )
    return grid


def moves_table(task: Mapping[str, Any]) -> Table | None:
    placement = placement_of(task)
    moves = placement.get("moves")
    if not isinstance(moves, list) or not moves:
        return None
    grid = table("FROM", "TO", "AT", "BY", title="Moves")
    for m in moves:
        if isinstance(m, dict):
            grid.add_row(text(m.get("from")), text(m.get("to")), text(epoch_time(m.get("at"))), text(m.get("by")))
    return grid


def duration(seconds: float | None) -> str:
    """0.35s, 12.4s, 3m05s, 2h01m, 1d04h; "-" when not known."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)  # clocks of different servers may disagree a little
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _began(first: Mapping[str, Any]) -> str:
    """How a run began, from its first row: created, retried (after a final status) or moved."""
    before, after = first.get("from_status"), first.get("to_status")
    if not before:
        return "created"
    if before in TERMINAL:
        return "retried"
    if before == after == "pending":
        return "moved"
    return str(before)  # rows from before run ids: say where it was


@dataclass
class Run:
    """One run of a task (a retry or a move starts another), from its history rows (as the admin's task
    page reads them: tasks_app/tasks/timings.py; the CLI only talks HTTP, so it reads them again here)."""

    run_id: str
    rows: list[Mapping[str, Any]]
    next_began: str = ""  # how the run after this one began ("" if none)
    next_at: float | None = None  # and when

    def first_at(self, status: str) -> float | None:
        """When this run first reached `status` (epoch seconds)."""
        return next((iso_epoch(r.get("at")) for r in self.rows if r.get("to_status") == status), None)

    @property
    def began(self) -> str:
        return _began(self.rows[0])

    @property
    def started(self) -> float | None:
        return iso_epoch(self.rows[0].get("at"))

    @property
    def final(self) -> Mapping[str, Any] | None:
        return next((r for r in self.rows if r.get("to_status") in TERMINAL), None)

    @property
    def ended(self) -> float | None:
        """Its final status; or, replaced without one (a move of a pending task), when the next run began."""
        final = self.final
        if final is not None:
            return iso_epoch(final.get("at"))
        return self.next_at if self.next_began else None

    def outcome(self) -> Text:
        final = self.final
        if final is not None:
            return status_text(final.get("to_status"))
        if self.next_began:
            return text(self.next_began, "magenta")
        return text(f"{self.rows[-1].get('to_status')} (now)", "dim")

    def statuses(self) -> str:
        return " -> ".join(str(r.get("to_status")) for r in self.rows)


def runs_of(history: Iterable[Mapping[str, Any]]) -> list[Run]:
    """The history rows (oldest first) split into runs: a new run starts where the run id changes."""
    runs: list[Run] = []
    for row in history:
        run_id = str(row.get("run_id") or "")
        if not runs or runs[-1].run_id != run_id:
            if runs:
                runs[-1].next_began, runs[-1].next_at = _began(row), iso_epoch(row.get("at"))
            runs.append(Run(run_id, []))
        runs[-1].rows.append(row)
    return runs


def _span(start: float | None, end: float | None) -> str:
    return duration(end - start) if start is not None and end is not None else "-"


def runs_table(runs: list[Run]) -> Table:
    grid = table("#", "RUN", "BEGAN", "AT", "STATUSES", "OUTCOME", title="Runs")
    for column in grid.columns[:4]:
        column.no_wrap = True  # on a narrow terminal the statuses wrap, not the run id a user may copy
    for number, run in enumerate(runs, start=1):
        grid.add_row(
            text(number),
            text(run.run_id or "(tracked: no run id)", "dim"),
            text(run.began),
            text(epoch_time(run.started)),
            text(run.statuses()),
            run.outcome(),
        )
    return grid


def timings_table(runs: list[Run]) -> Table:
    """Per run: queue wait (its start -> picked up: received, else in_progress), received -> in_progress,
    run time (in_progress -> its end), end-to-end (its start -> its end); then the task's own end-to-end
    (first start -> final status) once it has one. "-": a step skipped or not reached."""
    grid = table("RUN", "QUEUE WAIT", "RECEIVED->IN_PROGRESS", "RUN TIME", "END-TO-END", title="Timings")
    for number, run in enumerate(runs, start=1):
        received, running = run.first_at("received"), run.first_at("in_progress")
        grid.add_row(
            text(f"{number} {run.run_id[:8]}".strip()),
            text(_span(run.started, received if received is not None else running)),
            text(_span(received, running)),
            text(_span(running, run.ended)),
            text(_span(run.started, run.ended)),
        )
    if len(runs) > 1 and runs[-1].final is not None:
        total = _span(runs[0].started, runs[-1].ended)
        grid.add_row(Text("task", "bold"), Text(""), Text(""), Text(""), text(total))
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


SCHEDULING_STYLES = {"schedulable": "green", "cordoned": "yellow", "draining": "magenta", "drained": "dim"}


def scheduling_text(node: Mapping[str, Any]) -> Text:
    """schedulable, cordoned, draining; or drained, once a draining node has no unfinished task left."""
    value = "drained" if node.get("drained") else node.get("scheduling")
    return text(value, SCHEDULING_STYLES.get(str(value), ""))


def online_text(node: Mapping[str, Any]) -> Text:
    return text("yes", "green") if node.get("online") else text("no", "red")


def heartbeat_text(node: Mapping[str, Any]) -> Text:
    beat = node.get("last_heartbeat")
    return text(f"{iso_time(beat)} ({ago(iso_epoch(beat))})" if beat else "never")


def pairs_text(values: Any) -> str:
    """{"disk": "ssd", "zone": "a"} as disk=ssd,zone=a (sorted; "" for none)."""
    if not isinstance(values, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def _amounts(node: Mapping[str, Any], field: str) -> dict[str, Any]:
    value = node.get(field)
    return value if isinstance(value, dict) else {}


def capacity_text(node: Mapping[str, Any]) -> str:
    """Reserved of capacity per resource: "blocks 0/100, slots 1/4" ("" when it offers nothing).

    A resource reserved but no longer offered (its capacity was lowered or removed) shows as 2/0.
    """
    capacity, reserved = _amounts(node, "capacity"), _amounts(node, "reserved")
    names = sorted({*capacity, *reserved})
    return ", ".join(f"{r} {reserved.get(r, 0)}/{capacity.get(r, 0)}" for r in names)


def nodes_list_table(nodes: Iterable[Mapping[str, Any]]) -> Table:
    grid = table(
        "NAME", "CLUSTER", "STATE", "TRANSPORT", "ONLINE", "SCHEDULING", "LABELS", "RESERVED/CAPACITY", "UNFINISHED",
        "LAST HEARTBEAT",
    )  # fmt: skip
    for n in nodes:
        grid.add_row(
            text(n.get("name")),
            text(n.get("cluster")),
            text(n.get("state")),
            text(n.get("transport")),
            online_text(n),
            scheduling_text(n),
            text(pairs_text(n.get("labels"))),
            text(capacity_text(n)),
            text(n.get("unfinished_tasks")),
            text(ago(iso_epoch(n.get("last_heartbeat"))) if n.get("last_heartbeat") else "never"),
        )
    return grid


def node_fields(node: Mapping[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows = [
        ("Name", text(node.get("name"))),
        ("ID", text(node.get("id"), "dim")),
        ("Cluster", text(node.get("cluster"))),
        ("State", text(node.get("state"))),
        ("Scheduling", scheduling_text(node)),
        ("Transport", text(node.get("transport"))),
        ("Online", online_text(node)),
        ("Last heartbeat", heartbeat_text(node)),
        ("Registered", text(iso_time(node.get("registered_at")))),
        ("Data dir", text(node.get("data_dir"))),
        ("Labels", text(pairs_text(node.get("labels")))),
        ("Unfinished tasks", text(node.get("unfinished_tasks"))),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def capacity_table(node: Mapping[str, Any]) -> Table | None:
    """Per resource: what the node offers, what its unfinished tasks reserve, what is left."""
    capacity, reserved, free = _amounts(node, "capacity"), _amounts(node, "reserved"), _amounts(node, "free")
    names = sorted({*capacity, *reserved})
    if not names:
        return None
    grid = table("RESOURCE", "CAPACITY", "RESERVED", "FREE", title="Capacity")
    for r in names:
        left = free.get(r, capacity.get(r, 0) - reserved.get(r, 0))
        short = isinstance(left, int) and left < 0  # capacity lowered below what is reserved
        grid.add_row(text(r), text(capacity.get(r, 0)), text(reserved.get(r, 0)), text(left, "red" if short else ""))
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
