"""The HTTP side: one httpx client per command, the API's errors turned into readable messages."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from cli import config
from cli.errors import ApiError, Unreachable, UsageProblem
from cli.sse import SseEvent, parse

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TASKHUB_URL"
TOKEN_ENV = "TASKHUB_TOKEN"  # noqa: S105  # the variable's name, not a secret
USER_AGENT = "taskhub-cli/0.1"
REQUEST_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0
MAX_PAGE_SIZE = 1000  # the server's TaskCursorPagination.max_page_size

Params = Mapping[str, str | int]


def seg(value: str) -> str:
    """One URL path segment, escaped (names and ids are user input)."""
    return quote(value, safe="")


def auth_headers(base_url: str | None = None) -> dict[str, str]:
    """The credentials to send to `base_url`, as `Authorization: Token <key>`.

    TASKHUB_TOKEN from the environment first; else the token `taskhub login` saved, but only when
    `base_url` is the server it was saved for (or not given), so no other server ever sees it.
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        saved = config.load()
        if saved is not None and (base_url is None or normalize_url(saved.url) == normalize_url(base_url)):
            token = saved.token
    return {"Authorization": f"Token {token}"} if token else {}


def error_message(body: Any) -> str:
    """The API's own words for an error.

    /api/v1 answers {"detail": "..."} or field errors {"field": ["msg"], "storage_units": [{"node": [...]}]};
    the seed-style middleware answers {"success": false, "message": "..."}.
    """
    if isinstance(body, dict):
        for key in ("detail", "message"):
            value = body.get(key)
            if isinstance(value, str):
                return value
    parts = list(_field_errors(body, ""))
    return "; ".join(parts) if parts else str(body)


def _field_errors(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            yield from _field_errors(inner, f"{where}.{name}" if where and name else where or name)
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        text = " ".join(value)
        yield f"{where}: {text}" if where else text
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _field_errors(inner, f"{where}[{i}]")
    elif value not in (None, "", {}):
        yield f"{where}: {value}" if where else str(value)


@dataclass(frozen=True)
class Answer:
    status_code: int
    data: Any


class Api:
    """A thin client for the taskhub REST API at `base_url` (e.g. http://127.0.0.1:8000)."""

    def __init__(self, base_url: str, *, timeout: float = REQUEST_TIMEOUT, send_token: bool = True) -> None:
        self.base_url = normalize_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                **(auth_headers(self.base_url) if send_token else {}),
            },
            timeout=timeout,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, params: Params | None = None, body: Any = None) -> Answer:
        """Send one request; an HTTP error status raises ApiError, no answer at all raises Unreachable."""
        url = f"{self.base_url}{path}"
        try:
            resp = self._http.request(method, path, params=params, json=body)
        except httpx.ConnectError as exc:
            raise Unreachable(
                f"cannot connect to taskhub at {self.base_url} ({exc}); is the server running? "
                f"Set {URL_ENV} or --url to point at it."
            ) from exc
        except httpx.TimeoutException as exc:
            raise Unreachable(f"no answer from taskhub at {self.base_url} ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot talk to taskhub at {self.base_url}: {exc}") from exc
        if resp.is_redirect:
            # Not followed: a POST would turn into a GET. Most likely http:// answered for https://.
            raise ApiError(
                f"{method} {url} was redirected to {resp.headers.get('location')}; point --url / {URL_ENV} there",
                status_code=resp.status_code,
                method=method,
                url=url,
            )
        data = _json_or_none(resp)
        _raise_for_error(resp, data, method, url)
        if data is None and resp.content:
            raise ApiError(
                f"the answer to {method} {url} is not JSON; is {self.base_url} a taskhub server?",
                status_code=resp.status_code,
                method=method,
                url=url,
            )
        return Answer(resp.status_code, data)

    @contextmanager
    def events(
        self, params: Mapping[str, str | list[str]], *, last_id: str | None = None
    ) -> Iterator[Iterator[SseEvent]]:
        """GET /api/v1/events/ as a stream: the events as they come, until the server ends the stream
        (`event: end` or `cutoff`, which the caller resumes from with `last_id`) or the connection drops."""
        path = "/api/v1/events/"
        url = f"{self.base_url}{path}"
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        # The server writes at least a keepalive every few seconds; a much longer silence is a dead connection.
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=STREAM_READ_TIMEOUT)
        try:
            with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as resp:
                if resp.is_error:
                    resp.read()
                    _raise_for_error(resp, _json_or_none(resp), "GET", url)
                yield parse(resp.iter_lines())
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to taskhub at {self.base_url} ({exc}); is the server running?") from exc

    def get(self, path: str, *, params: Params | None = None) -> Any:
        return self.request("GET", path, params=params).data

    def post(self, path: str, body: Any = None) -> Answer:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Answer:
        return self.request("DELETE", path)

    def pages(self, path: str, params: Params) -> Iterator[list[Any]]:
        """Each page of a cursor-paged list ({"next", "previous", "results"}), following `next`.

        Only the query of `next` is used: the server builds that link from its own idea of its host,
        which may not be the address this client reached it at (a proxy, a port forward).
        """
        query: Params = params
        while True:
            page = self.get(path, params=query)
            yield list(page.get("results", []))
            nxt = page.get("next")
            if not nxt:
                return
            query = dict(parse_qsl(urlsplit(nxt).query))


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    problem = parts.scheme not in ("http", "https") or not parts.netloc
    if not problem:
        try:
            httpx.URL(url)
        except httpx.InvalidURL:
            problem = True
    if problem:
        raise UsageProblem(f"not an http(s) URL: {url!r} (expected e.g. {DEFAULT_URL})")
    return url


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in its delay-seconds form (the only one taskhub sends); None otherwise."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _raise_for_error(resp: httpx.Response, data: Any, method: str, url: str) -> None:
    if not resp.is_error:
        return
    detail = resp.reason_phrase if data is None else error_message(data)
    if resp.status_code == 401:
        detail += f"; run `taskhub login` or set {TOKEN_ENV}"
    raise ApiError(
        f"{detail} (HTTP {resp.status_code} from {method} {url})",
        status_code=resp.status_code,
        method=method,
        url=url,
        retry_after=retry_after_seconds(resp.headers.get("retry-after")),
        body=data,
    )


def _json_or_none(resp: httpx.Response) -> Any:
    if not resp.content or "json" not in resp.headers.get("content-type", ""):
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def collect(pages: Iterator[list[Any]], *, limit: int, keep: Callable[[Any], bool]) -> tuple[list[Any], bool]:
    """Up to `limit` rows that `keep` accepts, and whether the limit cut the list short (there may be more)."""
    rows: list[Any] = []
    for page in pages:
        for row in page:
            if keep(row):
                rows.append(row)
                if len(rows) >= limit:
                    return rows, True
    return rows, False
