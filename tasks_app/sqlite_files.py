"""The SQLite database and its -wal/-shm/-journal files are 0600: they hold password hashes, API tokens
and every task's data. PostgreSQL keeps its files itself; nothing here touches it.

Why a connection_created receiver that chmods, and not a umask: every process that opens the database
(runserver, gunicorn, the writers, migrate, the test run's own database) passes through it, files an
older version left world-readable are fixed too, and a umask is process-wide: it would also make
collected static files and node data unreadable to others, and changing it is racy with threads.
SQLite creates -wal and -shm with the main file's mode, so once that is 0600 they are born 0600. What
is left, a freshly created file between its creation and this receiver, sits in var/, which is 0700."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from taskhub import private_files

SUFFIXES = ("", "-wal", "-shm", "-journal")


def make_private(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    # An in-memory database has no file; a file: URI names one we leave to whoever wrote it.
    if connection.is_in_memory_db() or name.startswith("file:"):  # type: ignore[attr-defined]
        return
    for suffix in SUFFIXES:
        private_files.tighten(Path(name + suffix), private_files.PRIVATE_FILE)
