"""Django's PostgreSQL backend, changed in one way for the web's connection pool (TASKHUB_DB_POOL_SIZE,
taskhub/settings.py): a request does not wait on the pool for a database that is down.

psycopg_pool keeps a request that finds no live connection waiting for the pool's whole timeout while it
reconnects in the background with a growing backoff. With the database down, every request then held its
web thread for TASKHUB_DB_POOL_TIMEOUT (5 s) before its 503: `make faults` counted 9 answers during a 10 s
PostgreSQL outage, each after 5 s. And once the database is back, the pool may still be asleep in that
backoff (1, 2, 4, 8 s ... doubling) before it tries again.

So a request waits for a pooled connection in short slices. Between two, if the pool's attempts to connect
have failed meanwhile and the server does not even take a TCP connection (bounded by libpq's
connect_timeout), the database is down: a breaker opens and the request fails (a 503,
tasks_app/api/errors.py). A server that answers with an error (too many clients) is up; a wait that runs
out on a pool whose connections are all lent out is only a 503 for that request. (The price of slices:
under saturation a waiter that goes back into the pool's queue loses its place in the order of arrival;
each still keeps its deadline.)

While the breaker is open, requests fail at once, except one trial per TASKHUB_DB_BREAKER_SECONDS, one at
a time, which waits on the pool for at most TRIAL_WAIT_SECONDS. The trial closes the breaker when the pool
gives it a connection. When the pool fails it but a full direct connect succeeds, the database is back
and the pool is the one still waiting (asleep in its backoff): the trial replaces it with a new pool and
takes its connection from that. Nothing but a connection from the pool closes the breaker.

Without a pool (writers, the scheduler, manage.py) every connect is already direct, bounded by
connect_timeout, and nothing changes."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import PoolTimeout

from tasks_app.ops.breaker import database_breaker

_trial = threading.Lock()  # one trial at a time: a trial can outlast the breaker's window
TRIAL_WAIT_SECONDS = 0.5  # how long the breaker's trial waits for a connection from the pool
SLICE_SECONDS = 0.25  # a request waiting for a pooled connection looks at the pool's failures this often


class DatabaseUnreachable(psycopg.OperationalError):
    """The database was found unreachable; Django wraps this as its OperationalError, which is a 503."""


@dataclass(frozen=True)
class _Wait:
    alias: str
    conn_params: dict[str, Any]
    seconds: float | None  # None: the pool's timeout
    trial: bool  # the breaker's trial: it waits while the breaker is open, which is what it is there to end


class DatabaseWrapper(base.DatabaseWrapper):
    # Django 5.1's pool, which django-stubs 5.2.5 does not declare yet (annotations only: Django's own stay).
    _connection_pools: dict[str, Any]
    close_pool: Callable[[], None]

    _waiting: _Wait | None = None  # set while this thread's wrapper (Django's are per thread) connects

    @property
    def pool(self) -> Any:
        # Django's property checks for this alias's pool, then reads it: a replacement by another thread
        # (below) in between is a KeyError. Read again: the new pool is there, or made now.
        while True:
            with contextlib.suppress(KeyError):
                pool = super().pool  # type: ignore[misc]  # django-stubs 5.2.5 lacks the pool
                return pool if self._waiting is None or pool is None else _Watched(pool, self._waiting)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.pool is None:
            return super().get_new_connection(conn_params)
        with self._admitted() as trial:
            try:
                connection = self._from_pool(conn_params, TRIAL_WAIT_SECONDS if trial else None, trial)
            except psycopg.OperationalError:
                if not trial:
                    # The wait also runs out on a pool whose connections are all lent out: only a server
                    # that does not take connections at all is down. Not asked twice once it is known.
                    if not database_breaker.is_open(self.alias) and not _listening(conn_params):
                        database_breaker.failed(self.alias)
                    raise
                if not _reachable(conn_params):
                    database_breaker.failed(self.alias)
                    raise
                self._replace_pool()
                connection = self._from_pool(conn_params, None, trial)
        database_breaker.succeeded(self.alias)
        return connection

    def _from_pool(self, conn_params: dict[str, Any], seconds: float | None, trial: bool) -> Any:
        """Django's get_new_connection, with this module's wait for the pool's connection (_Watched)."""
        self._waiting = _Wait(self.alias, conn_params, seconds, trial)
        try:
            return super().get_new_connection(conn_params)
        finally:
            self._waiting = None

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[bool]:
        """Lets the request through (yielding whether it is the breaker's trial), or refuses it at once."""
        if not database_breaker.is_open(self.alias):
            yield False
            return
        if not (database_breaker.allows(self.alias) and _trial.acquire(blocking=False)):
            raise DatabaseUnreachable("the database was unreachable a moment ago; not tried again yet")
        try:
            yield True
        finally:
            _trial.release()

    def _replace_pool(self) -> None:
        old = self._connection_pools.pop(self.alias, None)
        if old is not None:
            # Its waiting requests fail (a 503 each), and the connections still lent out are closed as they
            # come back. The second is for its worker threads to see the stop.
            old.close(timeout=1.0)


class _Watched:
    """The pool as Django's get_new_connection uses it (open, getconn), with a getconn that waits in
    slices and stops early once the database is found down; anything else goes to the pool itself."""

    def __init__(self, pool: Any, wait: _Wait) -> None:
        self._pool, self._wait = pool, wait

    def getconn(self) -> Any:
        deadline = time.monotonic() + (self._pool.timeout if self._wait.seconds is None else self._wait.seconds)
        errors = self._connect_errors()
        while True:
            left = deadline - time.monotonic()
            try:
                return self._pool.getconn(timeout=max(0.001, min(SLICE_SECONDS, left)))
            except PoolTimeout:
                if time.monotonic() >= deadline:
                    raise
            if self._wait.trial:
                continue
            if database_breaker.is_open(self._wait.alias):
                raise DatabaseUnreachable("the database is unreachable (found by another request)")
            now = self._connect_errors()
            if now > errors:  # the pool failed to connect meanwhile: is the server there at all?
                if not _listening(self._wait.conn_params):
                    database_breaker.failed(self._wait.alias)
                    raise DatabaseUnreachable("the database is unreachable")
                errors = now

    def _connect_errors(self) -> int:
        return int(self._pool.get_stats().get("connections_errors", 0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _reachable(conn_params: dict[str, Any]) -> bool:
    """Whether a connection to the database can be made now (what replacing the pool needs)."""
    try:
        psycopg.connect(**conn_params).close()
    except psycopg.Error:
        return False
    return True


def _listening(conn_params: dict[str, Any]) -> bool:
    """Whether the server takes connections at all (what opening the breaker needs): a server that answers
    with an error (too many clients, starting up) is up, and its requests wait for the pool as usual. A TCP
    connect, or the Unix socket's, bounded by connect_timeout; libpq's first host only."""
    host = str(conn_params.get("host") or "localhost").split(",")[0]
    port = int(str(conn_params.get("port") or 5432).split(",")[0])
    timeout = float(conn_params.get("connect_timeout") or 3)
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True
