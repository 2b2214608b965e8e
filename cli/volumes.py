"""`taskhub volume ...`: a cluster's volumes. Creating, starting, stopping and deleting one are tasks."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from cli import render
from cli.client import Answer, Api, seg
from cli.common import DEFAULT_TIMEOUT, JsonOption, TimeoutOption, UrlOption, WatchOption, open_api
from cli.watch import watch_and_exit

app = typer.Typer(help="Volumes: create, list, start, stop, delete.", no_args_is_help=True)

ClusterRequired = Annotated[str, typer.Option("--cluster", "-c", help="The cluster (name or id).", show_default=False)]


def volumes_path(cluster: str) -> str:
    # The list/create route has no trailing slash (Kadalu's path); the per-volume routes have one.
    return f"/api/v1/clusters/{seg(cluster)}/volumes"


def volume_path(cluster: str, name: str) -> str:
    return f"{volumes_path(cluster)}/{seg(name)}/"


def parse_unit(value: str) -> dict[str, str]:
    """node1, or node1:some/path for a path relative to the node's data directory."""
    node, sep, path = value.partition(":")
    if not node or (sep and not path):
        raise typer.BadParameter(f"{value!r}: use NODE or NODE:PATH", param_hint="'--unit'")
    return {"node": node, "path": path} if path else {"node": node}


def accepted(api: Api, answer: Answer, what: str, *, watch: bool, timeout: float, as_json: bool) -> None:
    """The 202 answer of a volume operation is its task: print it, and follow it with --watch."""
    task: dict[str, Any] = answer.data
    if not as_json:
        where = f" on node {task['node']}" if task.get("node") else ""
        render.console().print(
            Text.assemble(f"{what}: task {task['task_id']} ", render.status_text(task.get("task_status")), where)
        )
    elif not watch:
        render.print_json(task)
    if watch:
        watch_and_exit(api, task, timeout=timeout, as_json=as_json)


@app.command("create")
def create_volume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The volume's name.", show_default=False)],
    cluster: ClusterRequired,
    units: Annotated[
        list[str],
        typer.Option(
            "--unit", "-u", help="A storage unit, NODE or NODE:PATH; repeat for each unit.", show_default=False
        ),
    ],
    volume_type: Annotated[
        str, typer.Option("--type", help="replicate (2-3 units), disperse (3-16) or distribute (1-64).")
    ] = "replicate",
    node: Annotated[
        str | None, typer.Option("--node", "-n", help="Run the task on this node instead of the first unit's.")
    ] = None,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a volume (a volume_create task)."""
    body: dict[str, Any] = {"name": name, "type": volume_type, "storage_units": [parse_unit(u) for u in units]}
    if node:
        body["node"] = node
    with open_api(ctx, url) as api:
        answer = api.post(volumes_path(cluster), body)
        accepted(api, answer, f"Creating volume {name}", watch=watch, timeout=timeout, as_json=as_json)


@app.command("list")
def list_volumes(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Only this cluster's volumes.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List volumes: one cluster's, or every cluster's."""
    with open_api(ctx, url) as api:
        if cluster is not None:
            volumes = list(api.get(volumes_path(cluster)))
        else:
            volumes = []
            for c in api.get("/api/v1/clusters/"):
                volumes.extend(api.get(volumes_path(str(c["name"]))))
    if as_json:
        render.print_json(volumes)
        return
    out = render.console()
    out.print(render.volumes_table(volumes))
    out.print(render.footer(len(volumes), "volume"))


def _operation(
    ctx: typer.Context,
    method: str,
    path: str,
    what: str,
    *,
    url: str | None,
    watch: bool,
    timeout: float,
    as_json: bool,
) -> None:
    with open_api(ctx, url) as api:
        answer = api.request(method, path)
        accepted(api, answer, what, watch=watch, timeout=timeout, as_json=as_json)


@app.command("start")
def start_volume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The volume's name.", show_default=False)],
    cluster: ClusterRequired,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a volume (a volume_start task)."""
    _operation(
        ctx,
        "POST",
        f"{volume_path(cluster, name)}start/",
        f"Starting volume {name}",
        url=url,
        watch=watch,
        timeout=timeout,
        as_json=as_json,
    )


@app.command("stop")
def stop_volume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The volume's name.", show_default=False)],
    cluster: ClusterRequired,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a volume (a volume_stop task)."""
    _operation(
        ctx,
        "POST",
        f"{volume_path(cluster, name)}stop/",
        f"Stopping volume {name}",
        url=url,
        watch=watch,
        timeout=timeout,
        as_json=as_json,
    )


@app.command("delete")
def delete_volume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The volume's name.", show_default=False)],
    cluster: ClusterRequired,
    watch: WatchOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a stopped volume and its storage units (a volume_delete task)."""
    _operation(
        ctx,
        "DELETE",
        volume_path(cluster, name),
        f"Deleting volume {name}",
        url=url,
        watch=watch,
        timeout=timeout,
        as_json=as_json,
    )
