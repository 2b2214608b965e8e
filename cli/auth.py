"""`taskhub login` and `taskhub logout`: an API token for the other commands, kept in cli.config."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from cli import config
from cli.client import TOKEN_ENV, Api, normalize_url
from cli.common import UrlOption, server_url
from cli.errors import ApiError, UsageProblem

TOKEN_PATH = "/api/v1/auth/token/"  # noqa: S105  # a path, not a secret


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def login(
    ctx: typer.Context,
    username: Annotated[
        str | None,
        typer.Option("--username", "-u", help="Your user name; asked for when not given.", show_default=False),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (for scripts).")
    ] = False,
    token_stdin: Annotated[
        bool,
        typer.Option(
            "--token-stdin", help="Save an API token you already have, read from stdin, instead of logging in."
        ),
    ] = False,
    keep_other: Annotated[
        bool,
        typer.Option("--keep-other", help="Leave a saved login for another server alone (exit 0 without saving)."),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Log in with a user name and password; the API token is saved for the commands that follow."""
    base = server_url(ctx, url)
    if keep_other:
        saved = config.load()
        if saved is not None and normalize_url(saved.url) != normalize_url(base):
            typer.echo(f"{config.config_path()} is for {saved.url}; left alone.")
            return
    if token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            raise UsageProblem("--token-stdin: no token on stdin")
        path = config.save(url=normalize_url(base), token=token)
        typer.echo(f"Logged in to {normalize_url(base)}; the token is saved in {path}.")
        return
    if username is None:
        username = typer.prompt("Username")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else typer.prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageProblem("a user name and a password are needed")
    # No token on this request: a stale one must not stand in the way of getting a new one.
    with Api(base, send_token=False) as api:
        if urlsplit(api.base_url).scheme == "http" and not _is_local(api.base_url):
            warning = f"warning: {api.base_url} is plain http; the password and token cross the network unencrypted"
            typer.echo(warning, err=True)
        answer = api.post(TOKEN_PATH, {"username": username, "password": password})
        token = answer.data.get("token") if isinstance(answer.data, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(
                f"{api.base_url}{TOKEN_PATH} answered without a token",
                status_code=answer.status_code,
                method="POST",
                url=f"{api.base_url}{TOKEN_PATH}",
            )
        path = config.save(url=api.base_url, token=token)
    typer.echo(f"Logged in to {api.base_url} as {username}; the token is saved in {path}.")
    if os.environ.get(TOKEN_ENV, "").strip():
        typer.echo(f"note: {TOKEN_ENV} is set, and it is used instead of the saved token.", err=True)


def logout() -> None:
    """Forget the saved token (it stays valid on the server until an operator deletes or rotates it)."""
    path = config.config_path()
    if config.remove():
        typer.echo(f"Logged out: removed {path}.")
    else:
        typer.echo(f"Not logged in ({path} does not exist).")
