"""Django's PostgreSQL backend, changed in one way for the web's connection pool (TASKHUB_DB_POOL_SIZE,
taskhub/settings.py): a request does not wait on the pool for a database that is down.

psycopg_pool keeps a request that finds no live connection waiting for the pool's whole timeout while it
reconnects in the background with a growing backoff. With the database down, every request then held its
web thread for TASKHUB_DB_POOL_TIMEOUT (5 s) before its 503: `make faults` counted 9 answers during a 10 s
PostgreSQL outage, each after 5 s. And once the database is back, the pool may still be asleep in that
backoff (1, 2, 4, 8 s ... doubling) before it tries again.

So a breaker: when taking a connection from the pool fails and a direct connect (bounded by libpq's
connect_timeout) fails too, it opens. While it is open, requests fail at once (a 503,
tasks_app/api/errors.py), except one trial per TASKHUB_DB_BREAKER_SECONDS, one at a time, which goes
through the pool as usual. The trial closes the breaker when the pool gives it a connection. When the
pool fails it but a direct connect succeeds, the database is back and the pool is the one still waiting:
the trial replaces it with a new pool and takes its connection from that. A direct connect alone never
closes the breaker, and one that fails while the server is up (too many connections, say) only holds the
requests back until the pool has a connection to give.

Without a pool (writers, the scheduler, manage.py) every connect is already direct, bounded by
connect_timeout, and nothing changes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from django.db.backends.postgresql import base

from tasks_app.ops.breaker import database_breaker

_trial = threading.Lock()  # one trial at a time: a trial can outlast the breaker's window


class DatabaseUnreachable(psycopg.OperationalError):
    """The database was found unreachable; Django wraps this as its OperationalError, which is a 503."""


class DatabaseWrapper(base.DatabaseWrapper):
    # Django 5.1's pool, which django-stubs 5.2.5 does not declare yet (annotations only: Django's own stay).
    _connection_pools: dict[str, Any]
    close_pool: Callable[[], None]

    @property
    def pool(self) -> Any:
        # Django's property checks for this alias's pool, then reads it: a replacement by another thread
        # (below) in between is a KeyError. Read again: the new pool is there, or made now.
        while True:
            with contextlib.suppress(KeyError):
                return super().pool  # type: ignore[misc]  # django-stubs 5.2.5 lacks the pool

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.pool is None:
            return super().get_new_connection(conn_params)
        with self._admitted() as trial:
            try:
                connection = super().get_new_connection(conn_params)
            except psycopg.OperationalError:
                # A pool whose connections are all lent out times out too: only a direct connect that
                # fails says the database is down. Not tried again once another request has found it so.
                if not trial and database_breaker.is_open(self.alias):
                    raise
                if not _reachable(conn_params):
                    database_breaker.failed(self.alias)
                    raise
                if not trial:
                    raise
                self._replace_pool()
                connection = super().get_new_connection(conn_params)  # from the new pool
        database_breaker.succeeded(self.alias)
        return connection

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


def _reachable(conn_params: dict[str, Any]) -> bool:
    try:
        psycopg.connect(**conn_params).close()
    except psycopg.Error:
        return False
    return True
