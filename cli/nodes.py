"""`taskhub node ...` and `taskhub cluster ...`: the cluster records (/api/v1/nodes/, /api/v1/clusters/)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import render
from cli.client import seg
from cli.common import JsonOption, UrlOption, open_api

node_app = typer.Typer(help="Nodes: list.", no_args_is_help=True)
cluster_app = typer.Typer(help="Clusters: list.", no_args_is_help=True)


@node_app.command("list")
def list_nodes(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Only this cluster's nodes.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List nodes, with whether each is online (a recent heartbeat)."""
    with open_api(ctx, url) as api:
        params: dict[str, str | int] = {}
        if cluster is not None:
            # The nodes filter takes a name and answers [] for a cluster that does not exist; ask first,
            # so a typo is an error rather than an empty table. The answer gives the name for an id too.
            params["cluster__name"] = api.get(f"/api/v1/clusters/{seg(cluster)}/")["name"]
        nodes = list(api.get("/api/v1/nodes/", params=params))
    if as_json:
        render.print_json(nodes)
        return
    out = render.console()
    out.print(render.nodes_list_table(nodes))
    online = sum(1 for n in nodes if n.get("online"))
    out.print(render.footer(len(nodes), "node").append(f", {online} online", style="dim"))


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
