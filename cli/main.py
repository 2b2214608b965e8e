"""The `taskhub` command: `app` is the entry point ([project.scripts] taskhub = "cli.main:app")."""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from cli import auth, events, nodes, tasks, volumes
from cli.client import URL_ENV, normalize_url
from cli.common import Settings
from cli.errors import CliError


class TaskhubGroup(TyperGroup):
    """Every command's errors in one place: a message on stderr and the error's exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="taskhub",
    cls=TaskhubGroup,
    help="Command line client for taskhub: tasks, volumes, nodes and clusters over the REST API.\n\n"
    "Exit codes: 0 ok; 1 the API refused or a watched task failed; 2 usage or --watch timeout; "
    "3 cannot connect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold the API token
)
app.add_typer(tasks.app, name="task")
app.add_typer(volumes.app, name="volume")
app.add_typer(nodes.node_app, name="node")
app.add_typer(nodes.cluster_app, name="cluster")
app.command("events")(events.events)
app.command("login")(auth.login)
app.command("logout")(auth.logout)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar=URL_ENV,
            help="taskhub server URL; each command takes --url too. [default: the one `taskhub login` saved, "
            "else http://127.0.0.1:8000]",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Settings(url=url)
    if url is not None:
        normalize_url(url)  # a bad URL is a usage error before any command runs


__all__ = ["app"]
