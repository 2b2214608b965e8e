"""`taskhub node ...` and `taskhub cluster ...`: the cluster records (/api/v1/nodes/, /api/v1/clusters/).

A node's labels and capacity are what placement matches a task's constraints against; cordon, drain and
uncordon take a node out of placement and back (the server's tasks_app/fleet/scheduling.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.text import Text

from cli import render
from cli.client import Api, seg
from cli.common import JsonOption, UrlOption, open_api
from cli.errors import EXIT_FAILED, ApiError, CliError, WatchTimeout

node_app = typer.Typer(help="Nodes: list, show, create, update, delete, cordon, uncordon, drain.", no_args_is_help=True)
cluster_app = typer.Typer(help="Clusters: list.", no_args_is_help=True)

NODES_PATH = "/api/v1/nodes/"
UNFINISHED = ("pending", "received", "in_progress", "cancelling")
SHOW_TASKS = 20  # `node show` lists this many of its unfinished tasks
DRAIN_TIMEOUT = 300.0
POLL_FIRST, POLL_MAX = 0.5, 5.0  # seconds between polls while waiting for a drain: growing, capped


def node_path(name: str) -> str:
    return f"{NODES_PATH}{seg(name)}/"


# --- KEY=VALUE options -----------------------------------------------------------------------------------


def parse_pairs(values: list[str], option: str, *, removals: bool = False) -> tuple[dict[str, str], list[str]]:
    """KEY=VALUE options, and with `removals` KEY- (remove that key): the values by key, the keys to remove.

    Only the syntax is checked here; the server judges names and values, and says which one is wrong.
    """
    hint = f"'{option}'"
    usage = "KEY=VALUE" + (" or KEY- (to remove KEY)" if removals else "")
    given: dict[str, str] = {}
    dropped: list[str] = []
    for raw in values:
        key, eq, value = raw.partition("=")
        if not eq and removals and len(raw) > 1 and raw.endswith("-"):
            key = raw[:-1]
            if key in given:
                raise typer.BadParameter(f"{key!r} is both set and removed", param_hint=hint)
            dropped.append(key)
            continue
        if not eq:
            raise typer.BadParameter(f"{raw!r}: use {usage}", param_hint=hint)
        if not key:
            raise typer.BadParameter(f"{raw!r}: the name before '=' is empty; use {usage}", param_hint=hint)
        if key in dropped:
            raise typer.BadParameter(f"{key!r} is both set and removed", param_hint=hint)
        if key in given and given[key] != value:
            raise typer.BadParameter(f"{key!r} is given twice, as {given[key]!r} and {value!r}", param_hint=hint)
        given[key] = value
    return given, dropped


def parse_amounts(values: list[str], option: str, *, removals: bool = False) -> tuple[dict[str, int], list[str]]:
    """RESOURCE=N options (N a whole number), and with `removals` RESOURCE-."""
    given, dropped = parse_pairs(values, option, removals=removals)
    amounts: dict[str, int] = {}
    for key, value in given.items():
        try:
            amounts[key] = int(value)
        except ValueError:
            raise typer.BadParameter(
                f"{key}={value}: the amount must be a whole number, e.g. {key}=4", param_hint=f"'{option}'"
            ) from None
    return amounts, dropped


def merged(current: Any, given: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    out = dict(current) if isinstance(current, dict) else {}
    out.update(given)
    for key in dropped:
        out.pop(key, None)
    return out


LabelOption = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", metavar="KEY=VALUE", help="A label; repeat for more.", show_default=False),
]
CapacityOption = Annotated[
    list[str] | None,
    typer.Option(
        "--capacity", metavar="RESOURCE=N", help="What it offers of a resource; repeat for more.", show_default=False
    ),
]


# --- list, show ------------------------------------------------------------------------------------------


@node_app.command("list")
def list_nodes(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Only this cluster's nodes.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List nodes: online (a recent heartbeat), scheduling, labels, reserved/capacity, unfinished tasks."""
    with open_api(ctx, url) as api:
        params: dict[str, str | int] = {}
        if cluster is not None:
            # The nodes filter takes a name and answers [] for a cluster that does not exist; ask first,
            # so a typo is an error rather than an empty table. The answer gives the name for an id too.
            params["cluster__name"] = api.get(f"/api/v1/clusters/{seg(cluster)}/")["name"]
        nodes = list(api.get(NODES_PATH, params=params))
    if as_json:
        render.print_json(nodes)
        return
    out = render.console()
    out.print(render.nodes_list_table(nodes))
    online = sum(1 for n in nodes if n.get("online"))
    out.print(render.footer(len(nodes), "node").append(f", {online} online", style="dim"))


def unfinished_tasks(api: Api, name: str, limit: int) -> list[Any]:
    """Up to `limit` of the node's unfinished tasks, oldest first (the tasks filter takes one status)."""
    tasks: list[Any] = []
    for status in UNFINISHED:
        page = api.get("/api/v1/tasks/", params={"node": name, "task_status": status, "page_size": limit})
        tasks.extend(page.get("results", []))
    tasks.sort(key=lambda t: (t.get("task_create_timestamp") or 0, str(t.get("task_id"))))
    return tasks[:limit]


@node_app.command("show")
def show_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """A node in detail: state, scheduling, labels, capacity and what is reserved of it, its unfinished tasks."""
    with open_api(ctx, url) as api:
        node = api.get(node_path(name))
        tasks = unfinished_tasks(api, str(node["name"]), SHOW_TASKS) if node.get("unfinished_tasks") else []
    if as_json:
        render.print_json(node)
        return
    out = render.console()
    out.print(render.node_fields(node))
    capacity = render.capacity_table(node)
    if capacity is not None:
        out.print()
        out.print(capacity)
    if tasks:
        out.print()
        out.print(Text("Unfinished tasks", style="bold"))
        out.print(render.tasks_table(tasks))
        total = int(node.get("unfinished_tasks") or 0)
        out.print(render.footer(total, "unfinished task", more=total > len(tasks), hint="taskhub task list --node"))


# --- create, update, delete ------------------------------------------------------------------------------


@node_app.command("create")
def create_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new node's name.", show_default=False)],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Its cluster (name or id).", show_default=False)],
    labels: LabelOption = None,
    capacity: CapacityOption = None,
    joining: Annotated[
        bool, typer.Option("--joining", help="Register it joining: a node_addition task makes it a member.")
    ] = False,
    pull: Annotated[
        bool, typer.Option("--pull", help="It fetches its tasks (pull transport) instead of a queue pushing them.")
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a node (POST /api/v1/nodes/): a member at once, unless --joining."""
    body: dict[str, Any] = {"name": name, "cluster": cluster}
    given_labels, _ = parse_pairs(labels or [], "--label")
    amounts, _ = parse_amounts(capacity or [], "--capacity")
    if given_labels:
        body["labels"] = given_labels
    if amounts:
        body["capacity"] = amounts
    if joining:
        body["state"] = "joining"
    if pull:
        body["transport"] = "pull"
    with open_api(ctx, url) as api:
        node = api.post(NODES_PATH, body).data
    if as_json:
        render.print_json(node)
        return
    out = render.console()
    out.print(Text(f"Created node {node['name']} in cluster {node.get('cluster')} ({node.get('state')}, "
                   f"{node.get('transport')})"))  # fmt: skip
    print_labels_capacity(node)


def print_labels_capacity(node: dict[str, Any]) -> None:
    out = render.console()
    out.print(Text(f"  labels: {render.pairs_text(node.get('labels')) or '-'}"))
    out.print(Text(f"  reserved/capacity: {render.capacity_text(node) or '-'}"))


@node_app.command("update")
def update_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            metavar="KEY=VALUE|KEY-",
            help="Set a label, or remove it (KEY-); repeat for more. Other labels stay.",
            show_default=False,
        ),
    ] = None,
    capacity: Annotated[
        list[str] | None,
        typer.Option(
            "--capacity",
            metavar="RESOURCE=N|RESOURCE-",
            help="Set what it offers of a resource, or remove it (RESOURCE-); repeat for more. Others stay.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a node's labels or capacity: reads the node, applies the changes to what it has, and stores
    the result (PATCH replaces labels and capacity whole)."""
    set_labels, drop_labels = parse_pairs(labels or [], "--label", removals=True)
    amounts, drop_amounts = parse_amounts(capacity or [], "--capacity", removals=True)
    if not (set_labels or drop_labels or amounts or drop_amounts):
        raise typer.BadParameter("nothing to change: give --label or --capacity", param_hint="'--label'/'--capacity'")
    with open_api(ctx, url) as api:
        node = api.get(node_path(name))
        body: dict[str, Any] = {}
        if set_labels or drop_labels:
            body["labels"] = merged(node.get("labels"), set_labels, drop_labels)
        if amounts or drop_amounts:
            body["capacity"] = merged(declared_capacity(node), amounts, drop_amounts)
        node = api.request("PATCH", node_path(str(node["name"])), body=body).data
    if as_json:
        render.print_json(node)
        return
    render.console().print(Text(f"Updated node {node['name']}"))
    print_labels_capacity(node)


def declared_capacity(node: dict[str, Any]) -> dict[str, Any]:
    """The capacity an operator set (not the effective one, whose "blocks" may be what the worker reports:
    storing a merge of that would pin the worker's figure of today)."""
    return dict(node.get("declared_capacity") or {})


@node_app.command("delete")
def delete_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    url: UrlOption = None,
) -> None:
    """Remove a node, its account and token. Refused while it has unfinished tasks or holds records (storage
    units, vDAGs, block allocations): they are listed, to cancel, move (taskhub node drain) or delete first."""
    with open_api(ctx, url) as api:
        try:
            api.delete(node_path(name))
        except ApiError as exc:
            if exc.status_code != 409 or not isinstance(exc.body, dict):
                raise
            print_busy(exc.message, exc.body)
            raise typer.Exit(EXIT_FAILED) from None
    render.console().print(Text(f"Deleted node {name}"))


def print_busy(message: str, body: dict[str, Any]) -> None:
    """A refused delete on stderr, as every error is (TaskhubGroup), with what stands in its way."""
    typer.echo(f"error: {message}", err=True)
    for title, key in (("Unfinished tasks", "unfinished_tasks"), ("Holds", "holds")):
        items = body.get(key)
        if isinstance(items, list) and items:
            typer.echo(f"{title}:", err=True)
            for item in items:
                typer.echo(f"  {item}", err=True)


# --- cordon, uncordon, drain -----------------------------------------------------------------------------


def _schedule(ctx: typer.Context, name: str, action: str, url: str | None, as_json: bool) -> None:
    with open_api(ctx, url) as api:
        node = api.post(f"{node_path(name)}{action}/").data
    if as_json:
        render.print_json(node)
        return
    render.console().print(Text.assemble(f"Node {node['name']} is ", render.scheduling_text(node)))


@node_app.command("cordon")
def cordon_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """No new tasks for this node; what it has, it runs."""
    _schedule(ctx, name, "cordon", url, as_json)


@node_app.command("uncordon")
def uncordon_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Schedulable again (after cordon or drain)."""
    _schedule(ctx, name, "uncordon", url, as_json)


@node_app.command("drain")
def drain_node(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The node's name (or id).", show_default=False)],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until its unfinished tasks are done (it is drained).")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.0, help="With --wait: give up after this many seconds (exit 2).")
    ] = DRAIN_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cordon a node and move its pending tasks to other nodes that may take them; the tasks it already runs
    finish there. Prints what moved (and where), what stayed (and why) and what still runs; then, with
    --wait, waits until none is left."""
    out = render.console()
    with open_api(ctx, url) as api:
        report = api.post(f"{node_path(name)}drain/").data
        node_name = str(report.get("node") or name)
        if not as_json:
            print_drain(report)
        if not wait:
            if as_json:
                render.print_json(report)
            return
        if not as_json:
            out.print(Text(f"Waiting for node {node_name} to drain (timeout {timeout:g}s)...", style="dim"))
        node = wait_drained(api, node_name, timeout)
    if as_json:
        render.print_json({**report, "drained": bool(node.get("drained")),
                           "unfinished_tasks": node.get("unfinished_tasks")})  # fmt: skip
    else:
        out.print(Text(f"Node {node_name} is drained", style="green"))


def print_drain(report: dict[str, Any]) -> None:
    out = render.console()
    node = report.get("node")
    out.print(Text(f"Node {node} is draining: no new tasks for it"))
    moved, stayed, running = report.get("moved") or [], report.get("stayed") or [], report.get("running") or []
    out.print(Text(f"Moved: {len(moved)}", style="bold"))
    for m in moved:
        out.print(Text(f"  {m.get('task_id')} -> {m.get('to')}"))
    out.print(Text(f"Stayed: {len(stayed)}", style="bold"))
    for s in stayed:
        out.print(Text(f"  {s.get('task_id')}: {s.get('reason')}"))
    out.print(Text(f"Running: {len(running)}" + (f" (they finish on {node})" if running else ""), style="bold"))
    for task_id in running:
        out.print(Text(f"  {task_id}"))


def wait_drained(api: Api, name: str, timeout: float) -> dict[str, Any]:
    """Poll the node until the API says it is drained; WatchTimeout (exit 2) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = POLL_FIRST
    while True:
        node: dict[str, Any] = api.get(node_path(name))
        if node.get("drained"):
            return node
        if node.get("scheduling") != "draining":
            # Uncordoned meanwhile: it never becomes drained, so waiting would only run into the timeout.
            raise CliError(f"node {name} is {node.get('scheduling')} now, no longer draining; stopped waiting")
        left = deadline - time.monotonic()
        if left <= 0:
            count = node.get("unfinished_tasks")
            raise WatchTimeout(
                f"node {name} is not drained after {timeout:g}s: {count} unfinished task(s) remain "
                f"(taskhub task list --node {name})"
            )
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, POLL_MAX)


# --- clusters --------------------------------------------------------------------------------------------


@cluster_app.command("list")
def list_clusters(ctx: typer.Context, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List clusters and their nodes."""
    with open_api(ctx, url) as api:
        clusters = list(api.get("/api/v1/clusters/"))
    if as_json:
        render.print_json(clusters)
        return
    out = render.console()
    out.print(render.clusters_table(clusters))
    out.print(render.footer(len(clusters), "cluster"))
