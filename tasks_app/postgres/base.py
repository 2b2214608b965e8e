"""Django's PostgreSQL backend, changed in one way for the web's connection pool (TASKHUB_DB_POOL_SIZE,
taskhub/settings.py): a request does not wait on the pool for a database that is down.

psycopg_pool keeps a request that finds no live connection waiting for the pool's whole timeout while it
reconnects in the background with a growing backoff. With the database down, every request then held its
web thread for TASKHUB_DB_POOL_TIMEOUT (5 s) before its 503: `make faults` counted 9 answers during a 10 s
PostgreSQL outage, each after 5 s. And once the database was back, the pool could still be asleep in that
backoff (1, 2, 4, 8 s ...) before it tried again.

So, when taking a connection from the pool fails and a direct connect (bounded by libpq's connect_timeout)
confirms that the database cannot be reached, a breaker opens. While it is open, requests fail at once (a
503, tasks_app/api/errors.py), and one request per TASKHUB_DB_BREAKER_SECONDS tries a direct connect; when
that succeeds, the old pool, which holds dead connections and may be asleep in its backoff, is replaced
by a new one. Without a pool (writers, the scheduler, manage.py) every connect is already a direct one,
bounded by connect_timeout, and nothing changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from django.db.backends.postgresql import base

from tasks_app.ops.breaker import database_breaker

_replacing = threading.Lock()


class DatabaseUnreachable(psycopg.OperationalError):
    """The database was found unreachable; Django wraps this as its OperationalError, which is a 503."""


class DatabaseWrapper(base.DatabaseWrapper):
    # Django 5.1's pool, which django-stubs 5.2.5 does not declare yet (annotations only: Django's own stay).
    pool: Any
    _connection_pools: dict[str, Any]
    close_pool: Callable[[], None]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if self.pool is None:
            return super().get_new_connection(conn_params)
        if database_breaker.is_open(self.alias):
            if not database_breaker.allows(self.alias):
                raise DatabaseUnreachable("the database was unreachable a moment ago; not tried again yet")
            if not _reachable(conn_params):
                database_breaker.failed(self.alias)
                raise DatabaseUnreachable("the database is unreachable")
            self._replace_pool()
            database_breaker.succeeded(self.alias)
        try:
            return super().get_new_connection(conn_params)
        except psycopg.OperationalError:
            # A pool whose every connection is lent out times out too: only a direct connect that fails
            # says the database is down.
            if not _reachable(conn_params):
                database_breaker.failed(self.alias)
            raise

    def _replace_pool(self) -> None:
        with _replacing:
            old = self._connection_pools.pop(self.alias, None)
        if old is not None:
            old.close(timeout=0)  # the connections still lent out are closed as they come back


def _reachable(conn_params: dict[str, Any]) -> bool:
    try:
        psycopg.connect(**conn_params).close()
    except psycopg.Error:
        return False
    return True
