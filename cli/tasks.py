"""`taskhub task ...`: list, show, create and watch tasks (/api/v1/tasks/)."""

from __future__ import annotations

import json
import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from cli import render
from cli.client import MAX_PAGE_SIZE, collect
from cli.common import DEFAULT_TIMEOUT, JsonOption, TimeoutOption, UrlOption, WatchOption, open_api
from cli.errors import EXIT_FAILED
from cli.nodes import parse_amounts, parse_pairs
from cli.watch import task_path, watch_and_exit

app = typer.Typer(help="Tasks: list, show, create, create-many, watch, retry, replay, cancel.", no_args_is_help=True)

TASKS_PATH = "/api/v1/tasks/"
BULK_PATH = f"{TASKS_PATH}bulk/"


class TaskStatus(str, Enum):
    """The API's task statuses (workers/protocol/status.py; the CLI imports neither side)."""

    pending = "pending"
    received = "received"
    in_progress = "in_progress"
    cancelling = "cancelling"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> int:
    """Epoch seconds, or an age such as 90s, 10m, 2h, 1d (that long before now)."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    match = _AGO.fullmatch(value)
    if match is None:
        raise typer.BadParameter(
            "use epoch seconds (e.g. 1758000000) or an age such as 30s, 10m, 2h, 1d", param_hint="'--since'"
        )
    return int(time.time()) - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_object(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'--data'") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter("must be a JSON object, e.g. '{\"blocks\": 2}'", param_hint="'--data'")
    return data


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="Only tasks of this type.")] = None,
    status: Annotated[TaskStatus | None, typer.Option("--status", "-s", help="Only tasks in this status.")] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Only tasks assigned to this node.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only tasks updated at or after this time: epoch seconds, or an age (30s, 10m, 2h, 1d)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many tasks.")] = 100,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tasks, oldest first (the API's order)."""
    params: dict[str, str | int] = {}
    if task_type:
        params["task_type"] = task_type
    if status is not None:
        params["task_status"] = status.value
    if since is not None:
        params["updated_since"] = parse_since(since)
    if node:
        params["node"] = node
    params["page_size"] = min(limit, MAX_PAGE_SIZE)
    with open_api(ctx, url) as api:
        tasks, more = collect(api.pages(TASKS_PATH, params), limit=limit, keep=lambda t: True)
    if as_json:
        render.print_json(tasks)
        return
    out = render.console()
    out.print(render.tasks_table(tasks))
    out.print(render.footer(len(tasks), "task", more=more, hint="raise --limit or narrow with --since/--type"))


@app.command("show")
def show_task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """A task's fields, data, per-node results and status history."""
    with open_api(ctx, url) as api:
        task = api.get(task_path(task_id))
        history = api.get(f"{task_path(task_id)}history/")
    if as_json:
        render.print_json({"task": task, "history": history})
        return
    out = render.console()
    out.print(render.task_fields(task))
    out.print(Text("\ntask_data", style="bold"))
    out.print(render.pretty_json(task.get("task_data", {})))
    out.print(Text("\ntask_status_data", style="bold"))
    status_data = task.get("task_status_data", {})
    out.print(render.pretty_json(status_data))
    error = render.task_error(status_data)
    if error is not None:
        out.print()
        out.print(error)
    nodes = render.nodes_table(status_data)
    if nodes is not None:
        out.print()
        out.print(nodes)
    print_placement(task)
    runs = render.runs_of(history)
    if runs:
        out.print()
        out.print(render.runs_table(runs))
        out.print()
        out.print(render.timings_table(runs))
    out.print()
    out.print(render.history_table(history))  # last: scripts read the rows after its title


def print_placement(task: dict[str, Any]) -> None:
    """Where it runs and why: the rule, each candidate's load or why it was passed over, and any moves."""
    out = render.console()
    out.print(Text("\nPlacement", style="bold"))
    out.print(render.placement_fields(task))
    for part in (render.candidates_table(task), render.moves_table(task)):
        if part is not None:
            out.print()
            out.print(part)


@app.command("create")
def create_task(
    ctx: typer.Context,
    task_type: Annotated[
        str, typer.Argument(help="The task type, e.g. block_alloc, or any name for a plain record.", show_default=False)
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="task_data, a JSON object.")] = "{}",
    node: Annotated[str | None, typer.Option("--node", "-n", help="Run on this node (executable types).")] = None,
    track: Annotated[
        bool,
        typer.Option("--track", help="Store a tracked record that you drive, even if the type is executable."),
    ] = False,
    task_id: Annotated[
        str | None, typer.Option("--id", help="Choose the task id: repeating the same create is then safe.")
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            metavar="KEY=VALUE",
            help="Run only on a node with this label (constraints.labels); repeat for more.",
            show_default=False,
        ),
    ] = None,
    needs: Annotated[
        list[str] | None,
        typer.Option(
            "--need",
            metavar="RESOURCE=N",
            help="Run only on a node with N of this resource free, reserved while the task is unfinished "
            "(constraints.capacity); repeat for more.",
            show_default=False,
        ),
    ] = None,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a task (POST /api/v1/tasks/): an executable type runs on a node, any other is a tracked record."""
    body: dict[str, Any] = {"task_type": task_type, "task_data": parse_object(data)}
    if node:
        body["node"] = node
    if track:
        body["execute"] = False
    if task_id:
        body["task_id"] = task_id
    constraints = task_constraints(labels or [], needs or [])
    if constraints:
        body["constraints"] = constraints
    with open_api(ctx, url) as api:
        answer = api.post(TASKS_PATH, body)
        task = answer.data
        if not (watch and as_json):
            verb = "Created task" if answer.status_code == 201 else "Task already exists (same body):"
            print_new_task(task, verb, as_json=as_json)
        if watch:
            watch_and_exit(api, task, timeout=timeout, as_json=as_json)


def print_new_task(task: dict[str, Any], verb: str, *, as_json: bool) -> None:
    """A create's (or a replay's) answer: the task, its node, and, if it was created failed, why (e.g.
    Unschedulable: no node may take it, and why each may not)."""
    if as_json:
        render.print_json(task)
        return
    where = f", node {task['node']}" if task.get("node") else ""
    out = render.console()
    out.print(
        Text.assemble(
            f"{verb} {task['task_id']} ({task.get('task_type')}, ",
            render.status_text(task.get("task_status")),
            f"{where})",
        )
    )
    error = render.task_error(task.get("task_status_data"))
    if error is not None:
        out.print(error)


def task_constraints(labels: list[str], needs: list[str]) -> dict[str, Any]:
    """--label and --need as the create's constraints ({} for none); the server checks names and amounts."""
    constraints: dict[str, Any] = {}
    wanted, _ = parse_pairs(labels, "--label")
    if wanted:
        constraints["labels"] = wanted
    amounts, _ = parse_amounts(needs, "--need")
    if amounts:
        constraints["capacity"] = amounts
    return constraints


def read_tasks(source: str) -> list[Any]:
    """The task bodies in FILE (`-`: stdin): a JSON array, or JSON lines (one body per line, blank lines
    skipped). Each item goes to the server as it is: the server judges it, item by item."""
    hint = "'FILE'"
    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc}", param_hint=hint) from exc
    if raw.lstrip().startswith("["):
        try:
            tasks = json.loads(raw)
        except ValueError as exc:
            raise typer.BadParameter(f"not a valid JSON array: {exc}", param_hint=hint) from exc
        if not isinstance(tasks, list):
            raise typer.BadParameter("must be a JSON array of task bodies, or JSON lines", param_hint=hint)
    else:
        tasks = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                tasks.append(json.loads(line))
            except ValueError as exc:
                raise typer.BadParameter(f"line {number}: not valid JSON: {exc}", param_hint=hint) from exc
    if not tasks:
        raise typer.BadParameter(f"no tasks in {'stdin' if source == '-' else source}", param_hint=hint)
    return list(tasks)


@app.command("create-many")
def create_many(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            help="A JSON array of task bodies (each as for `task create`'s API: task_type, task_data, node, "
            "task_id, ...), or JSON lines, one body per line; - reads stdin.",
            show_default=False,
        ),
    ],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create many tasks in one request and one transaction (POST /api/v1/tasks/bulk/). Prints how each
    item went; the valid ones are created even if others fail. Exit 0 if none failed, 1 if any did."""
    tasks = read_tasks(file)
    with open_api(ctx, url) as api:
        answer = api.post(BULK_PATH, {"tasks": tasks}).data
    if as_json:
        render.print_json(answer)
    else:
        out = render.console()
        out.print(render.bulk_table(answer.get("results", [])))
        counts = ", ".join(f"{answer.get(k, 0)} {k}" for k in ("created", "existing", "failed") if answer.get(k))
        out.print(Text(counts or "nothing created", style="dim"))
    if answer.get("failed"):
        raise typer.Exit(EXIT_FAILED)


@app.command("watch")
def watch_task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.", show_default=False)],
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a task until it ends: exit 0 if it completed, 1 if it failed or was cancelled, 2 on timeout."""
    with open_api(ctx, url) as api:
        watch_and_exit(api, api.get(task_path(task_id)), timeout=timeout, as_json=as_json)


def _act(ctx: typer.Context, task_id: str, action: str, *, url: str | None, watch: bool, timeout: float,
         as_json: bool) -> None:  # fmt: skip
    with open_api(ctx, url) as api:
        task = api.post(f"{task_path(task_id)}{action}/").data
        if watch:
            watch_and_exit(api, task, timeout=timeout, as_json=as_json)
    if as_json:
        render.print_json(task)
        return
    attempt = f", attempt {task.get('attempts', 0)}" if action == "retry" else ""
    render.console().print(Text.assemble(f"Task {task['task_id']} ", render.status_text(task.get("task_status")),
                                         attempt))  # fmt: skip


@app.command("retry")
def retry_task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The failed task's id.", show_default=False)],
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-trigger a failed or cancelled task: same id, a new attempt (a new run), its history kept."""
    _act(ctx, task_id, "retry", url=url, watch=watch, timeout=timeout, as_json=as_json)


@app.command("cancel")
def cancel_task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.", show_default=False)],
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel an unfinished task: one not started never starts; a running one is cancelling until its node
    stops and undoes what it did (--watch waits for that)."""
    _act(ctx, task_id, "cancel", url=url, watch=watch, timeout=timeout, as_json=as_json)


def parse_sets(values: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE: a top-level key of task_data; VALUE as JSON when it parses (2, true, [..], {..}),
    else as the string it is."""
    given, _ = parse_pairs(values, "--set")
    edits: dict[str, Any] = {}
    for key, raw in given.items():
        try:
            edits[key] = json.loads(raw)
        except ValueError:
            edits[key] = raw
    return edits


@app.command("replay")
def replay_task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The failed or cancelled task's id.", show_default=False)],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The new task's whole task_data, a JSON object.")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Change one top-level key of the original's task_data (VALUE as JSON if it parses, else text); "
            "repeat for more.",
            show_default=False,
        ),
    ] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Run the new task on this node.")] = None,
    new_id: Annotated[
        str | None, typer.Option("--id", help="Choose the new task's id: repeating the same replay is then safe.")
    ] = None,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay a failed or cancelled task as a new task, with the same input or an edited one (checked as a
    create is). The original keeps its status and its history; both name each other."""
    if data is not None and sets:
        raise typer.BadParameter(
            "give --data (the whole task_data) or --set (edits of it), not both", param_hint="'--set'"
        )
    edits = parse_sets(sets or [])
    body: dict[str, Any] = {}
    if data is not None:
        body["task_data"] = parse_object(data)
    if node:
        body["node"] = node
    if new_id:
        body["task_id"] = new_id
    with open_api(ctx, url) as api:
        if edits:
            original = api.get(task_path(task_id)).get("task_data") or {}
            body["task_data"] = {**original, **edits}
        task = api.post(f"{task_path(task_id)}replay/", body).data
        if not (watch and as_json):
            print_new_task(task, f"Replayed task {task_id} as", as_json=as_json)
        if watch:
            watch_and_exit(api, task, timeout=timeout, as_json=as_json)
