"""Where Redis is: a plain `redis://` URL, or Redis Sentinel (`sentinel://`) watching a primary and its
replicas, which hands the clients the new primary after a failover (README "Durability of accepted
updates"). No Django here: the settings derive Celery's broker URL from REDIS_URL with it, and `make run`
checks a URL with it before Django is set up.

A Sentinel URL names the sentinels, not Redis itself, and the primary they watch is named apart
(TASKHUB_REDIS_SENTINEL_MASTER):

    sentinel://[[username]:password@]host:port[,host:port...][/db]

The username and password are the Redis servers' (primary and replicas); the sentinels are reached
without one. A host may be an IPv6 address in brackets; the port defaults to Sentinel's 26379.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel(url: str) -> SentinelTarget:
    """The sentinels, database and credentials of a sentinel:// URL. Raises ValueError on a malformed one."""
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0].strip("/")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    sentinels = tuple(_host_port(part) for part in netloc.split(",") if part)
    if not sentinels:
        raise ValueError(f"a {SENTINEL_SCHEME}:// URL names at least one sentinel host:port")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"the database of a {SENTINEL_SCHEME}:// URL is a number, got {path!r}") from None
    return SentinelTarget(sentinels=sentinels, db=db, username=username, password=password)


def _host_port(part: str) -> tuple[str, int]:
    if part.startswith("["):  # [::1]:26379
        host, _, tail = part[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        raise ValueError(f"no host in sentinel address {part!r}")
    try:
        return host, int(port) if port else SENTINEL_PORT
    except ValueError:
        raise ValueError(f"the port of sentinel address {part!r} is not a number") from None


def celery_broker_url(url: str) -> str:
    """`url` as Celery's broker URL. A sentinel:// URL becomes the form kombu's Sentinel transport reads,
    one URL per sentinel joined by ';' (the primary's name goes in the transport options, master_name);
    any other URL is already one."""
    if not is_sentinel(url):
        return url
    target = parse_sentinel(url)
    auth = ""
    if target.username or target.password is not None:
        auth = quote(target.username or "", safe="")
        if target.password is not None:
            auth += ":" + quote(target.password, safe="")
        auth += "@"
    return ";".join(
        f"{SENTINEL_SCHEME}://{auth}{_bracketed(host)}:{port}/{target.db}" for host, port in target.sentinels
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def connect(
    url: str, *, sentinel_master: str, socket_timeout: float, connect_timeout: float, health_check_interval: int = 30
) -> redis.Redis:
    """A client for `url`. For a sentinel:// URL, a client of the primary the sentinels name: each new
    connection asks them where it is, so after a failover (and a failed command on the old one) the next
    command goes to the new primary. The same timeouts bound every sentinel query as every command, so a
    lookup with all sentinels down costs at most one connect timeout per sentinel."""
    if not is_sentinel(url):
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
        )
    if not sentinel_master:
        raise ValueError(f"a {SENTINEL_SCHEME}:// Redis URL needs TASKHUB_REDIS_SENTINEL_MASTER, the primary's name")
    target = parse_sentinel(url)
    bounds = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=dict(bounds), **bounds)  # type: ignore[no-untyped-call]
    primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master,
        db=target.db,
        username=target.username,
        password=target.password,
        health_check_interval=health_check_interval,
    )
    return primary
