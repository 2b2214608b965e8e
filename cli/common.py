"""Options every command shares, and opening the API client a command uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import typer

from cli import config
from cli.client import DEFAULT_URL, URL_ENV, Api


@dataclass(frozen=True)
class Settings:
    """What the top-level options said; commands find it as ctx.obj."""

    url: str | None


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help=f"taskhub server URL [default: ${URL_ENV}, else the one `taskhub login` saved, else {DEFAULT_URL}]",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer instead of tables.")]
WatchOption = Annotated[
    bool,
    typer.Option(
        "--watch",
        "-w",
        help="Follow the task until it ends: exit 0 if it completed, 1 if not. With --json: print the final task.",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.0, help="With --watch: give up after this many seconds (exit 2).")
]
DEFAULT_TIMEOUT = 120.0


def server_url(ctx: typer.Context, url: str | None) -> str:
    """This command's own --url, else the top-level --url / TASKHUB_URL, else the server `taskhub login`
    saved, else the default."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else None
    chosen = url or (settings.url if settings else None) or os.environ.get(URL_ENV)
    if chosen:
        return chosen
    saved = config.load()
    return saved.url if saved is not None else DEFAULT_URL


def open_api(ctx: typer.Context, url: str | None) -> Api:
    """The client for this command (server_url); it sends the token for that server (client.auth_headers)."""
    return Api(server_url(ctx, url))
